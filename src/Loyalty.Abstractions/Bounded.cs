namespace Loyalty;

/// <summary>
/// Input quoted back in an error message: at most <see cref="EchoLengthMax"/> characters, so that a
/// huge field is never sent back whole (a 64 KB value echoed in a status once stalled its connection).
/// </summary>
public static class Bounded
{
    /// <summary>Characters of a client's value an error message may quote.</summary>
    public const int EchoLengthMax = 64;

    /// <summary>Characters of any error message sent to a client; longer ones are cut (a last line of defence behind <see cref="Echo"/>).</summary>
    public const int DetailLengthMax = 1_000;

    /// <summary>A message cut to <see cref="DetailLengthMax"/>.</summary>
    public static string Detail(string? message) =>
        message is null ? "" : message.Length <= DetailLengthMax ? message : string.Concat(message.AsSpan(0, DetailLengthMax), "…");

    /// <summary>The value, or its first <see cref="EchoLengthMax"/> characters and an ellipsis.</summary>
    public static string Echo(string? value) =>
        value is null ? "" : value.Length <= EchoLengthMax ? value : string.Concat(value.AsSpan(0, EchoLengthMax), "…");
}
