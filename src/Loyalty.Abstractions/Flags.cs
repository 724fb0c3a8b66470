namespace Loyalty;

/// <summary>
/// A change of a member's flags: either a replacement of them all, or flags added and removed
/// against whatever the member holds when the change applies (two clients editing different flags
/// at once then both take effect).
/// </summary>
/// <param name="Replace">The flags after the change; null for an edit by <paramref name="Add"/> and <paramref name="Remove"/>.</param>
/// <param name="Add">Flags to add; one already held changes nothing.</param>
/// <param name="Remove">Flags to remove; one not held changes nothing.</param>
[GenerateSerializer, Immutable]
public sealed record FlagChange(
    [property: Id(0)] IReadOnlyList<string>? Replace,
    [property: Id(1)] IReadOnlyList<string> Add,
    [property: Id(2)] IReadOnlyList<string> Remove)
{
    /// <summary>A replacement of every flag.</summary>
    public static FlagChange ReplaceWith(IReadOnlyList<string> flags) => new(flags, [], []);

    /// <summary>Why the change is malformed, naming the field; null when it is well formed.</summary>
    public string? Check()
    {
        if (Replace is not null && (Add.Count > 0 || Remove.Count > 0))
        {
            return "flags replaces every flag and cannot be combined with add_flags or remove_flags";
        }

        return CheckList(Replace ?? [], "flags") ?? CheckList(Add, "add_flags") ?? CheckList(Remove, "remove_flags")
            ?? (Add.FirstOrDefault(f => Remove.Contains(f, StringComparer.Ordinal)) is { } both
                ? $"flag '{both}' is in both add_flags and remove_flags" : null);
    }

    /// <summary>
    /// The member's flags after the change, sorted and without repeats, or null with
    /// <paramref name="error"/> when they would be more than <see cref="Limits.FlagRulesMax"/>.
    /// </summary>
    public string[]? ApplyTo(IReadOnlyList<string> held, out string? error)
    {
        IEnumerable<string> after = Replace ?? held.Concat(Add).Where(f => !Remove.Contains(f, StringComparer.Ordinal));
        string[] wanted = [.. after.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];
        error = wanted.Length > Limits.FlagRulesMax
            ? $"add_flags: the member would hold {wanted.Length} flags; at most {Limits.FlagRulesMax}" : null;
        return error is null ? wanted : null;
    }

    private static string? CheckList(IReadOnlyList<string> flags, string field)
    {
        if (flags.Count > Limits.FlagRulesMax)
        {
            return $"{field} has more than {Limits.FlagRulesMax} entries";
        }

        for (int i = 0; i < flags.Count; i++)
        {
            if (LoyaltyIds.Check(flags[i], $"{field}[{i}]", Limits.CodeLengthMax) is { } error)
            {
                return error;
            }
        }

        return null;
    }
}
