namespace Loyalty;

/// <summary>
/// Text typed by people (names, reasons, profile values). Control characters are refused: they
/// have no place in such text, and PostgreSQL refuses NUL outright, so one such reason in a
/// group commit would fail the whole batch of other members' entries.
/// </summary>
public static class FreeText
{
    /// <summary>Whether <paramref name="value"/> holds a C0 or C1 control character (tab and newline included).</summary>
    public static bool HasControl(string value) =>
        value.AsSpan().IndexOfAnyInRange('\u0000', '\u001F') >= 0 || value.AsSpan().IndexOfAnyInRange('\u007F', '\u009F') >= 0;

    /// <summary>
    /// Null when <paramref name="value"/> is acceptable text for <paramref name="field"/> (present
    /// unless optional, at most <paramref name="lengthMax"/> characters, no control characters),
    /// otherwise a message naming the field.
    /// </summary>
    public static string? Check(string? value, string field, int lengthMax, bool required = true)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return required ? $"{field} is required and at most {lengthMax} characters" : null;
        }

        if (value.Length > lengthMax)
        {
            return $"{field} is required and at most {lengthMax} characters";
        }

        return HasControl(value) ? $"{field} may not contain control characters" : null;
    }

    /// <summary>
    /// Null when <paramref name="values"/> are at most <paramref name="countMax"/> texts, each
    /// acceptable as <see cref="Check"/> takes a required one (a perk shown to members, say); else
    /// why not, naming <paramref name="field"/> and the first text refused by its place.
    /// </summary>
    public static string? CheckList(IReadOnlyList<string> values, string field, int countMax, int lengthMax)
    {
        if (values.Count > countMax)
        {
            return $"{field} must be at most {countMax} texts of 1..{lengthMax} characters";
        }

        for (int i = 0; i < values.Count; i++)
        {
            if (Check(values[i], $"{field}[{i}]", lengthMax) is { } error)
            {
                return error;
            }
        }

        return null;
    }

    /// <summary>The text without control characters and cut to <see cref="Bounded.EchoLengthMax"/>: safe to store and show whatever a client sent.</summary>
    public static string Clean(string? value) =>
        value is null ? "" : Bounded.Echo(HasControl(value) ? new string([.. value.Where(c => !char.IsControl(c))]) : value);
}
