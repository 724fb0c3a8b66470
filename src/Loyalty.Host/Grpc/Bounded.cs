namespace Loyalty.Host;

/// <summary>
/// Input quoted back in an error message: at most <see cref="EchoLengthMax"/> characters, so that a
/// huge field is never sent back whole (a 64 KB value echoed in a status once stalled its connection).
/// </summary>
public static class Bounded
{
    /// <summary>Characters of a client's value an error message may quote.</summary>
    public const int EchoLengthMax = 64;

    /// <summary>The value, or its first <see cref="EchoLengthMax"/> characters and an ellipsis.</summary>
    public static string Echo(string? value) =>
        value is null ? "" : value.Length <= EchoLengthMax ? value : string.Concat(value.AsSpan(0, EchoLengthMax), "…");
}
