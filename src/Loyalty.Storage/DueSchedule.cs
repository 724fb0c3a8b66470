namespace Loyalty.Storage;

/// <summary>
/// A change to a member's row in the due schedule: the time the member next has work to do by
/// the clock (a lot expires, a warning is due, a reservation lapses). An exact change sets the
/// time (null removes the row); a mark only ever moves it earlier. A due time may be early
/// (the member wakes, finds nothing and sets the next one) but never late.
/// </summary>
public readonly record struct DueChange(string ProgramId, string MemberId, DateTimeOffset? DueAt, bool Exact)
{
    private const string MarkWithoutTime = "a due mark (not exact) needs a time; only an exact change may remove the row";

    /// <summary>
    /// The time to set, or null to remove the row. A mark has nothing to move earlier without a
    /// time, and the stores would read one differently (a removal or nothing), so it is refused.
    /// </summary>
    public DateTimeOffset? DueAt { get; init; } = DueAt is not null || Exact
        ? DueAt
        : throw new ArgumentException(MarkWithoutTime + ".", nameof(DueAt));

    /// <summary>
    /// Why this change cannot be written, or null. The constructor refuses a mark without a time,
    /// but <c>with</c> and <c>default</c> do not run it: the commit queue asks this of every change
    /// it is given, so that no store reached through the queue reads a mark without a time or a row
    /// without a member. A method, not a property, so that it stays out of the record's text.
    /// </summary>
    public string? Check() => ProgramId is null || MemberId is null ? "a due change needs a program and a member"
        : DueAt is null && !Exact ? MarkWithoutTime
        : null;

    /// <summary>
    /// The changes of one batch reduced to one per member, in the order they were queued: an
    /// exact change replaces what came before it, and a later mark can only bring it forward.
    /// A single change is already collapsed and comes back as it is, without allocating.
    /// </summary>
    public static IReadOnlyList<DueChange> Collapse(IReadOnlyList<DueChange> changes)
    {
        if (changes.Count <= 1)
        {
            return changes;
        }

        var byMember = new Dictionary<(string, string), int>();
        var result = new List<DueChange>(changes.Count);
        foreach (DueChange change in changes)
        {
            if (!byMember.TryGetValue((change.ProgramId, change.MemberId), out int at))
            {
                byMember[(change.ProgramId, change.MemberId)] = result.Count;
                result.Add(change);
                continue;
            }

            DueChange before = result[at];
            result[at] = change.Exact
                ? change
                : before with { DueAt = Earliest(before.DueAt, change.DueAt) ?? change.DueAt, Exact = before.Exact };
        }

        return result;
    }

    private static DateTimeOffset? Earliest(DateTimeOffset? a, DateTimeOffset? b) =>
        a is null ? b : b is null ? a : a < b ? a : b;
}

/// <summary>A member whose due time has come, claimed for a while by this silo.</summary>
public readonly record struct DueMember(string ProgramId, string MemberId);
