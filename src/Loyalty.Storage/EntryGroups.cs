namespace Loyalty.Storage;

/// <summary>
/// Entries <see cref="Start"/> .. <see cref="Start"/> + <see cref="Count"/> − 1 of a batch: one
/// member's consecutive entries that are written all or nothing (changes decided on top of each
/// other, or a purchase and the redemption it carries).
/// </summary>
public readonly record struct EntryGroup(int Start, int Count);

/// <summary>The rule every store applies to a batch's groups after inserting its entries.</summary>
public static class EntryGroups
{
    /// <summary>
    /// Finds the groups of which some entries went in and others did not, marks their entries not
    /// inserted, and returns those that went in: the store removes them in the same transaction.
    /// Null when every group is whole (the common case: nothing allocated).
    /// </summary>
    public static List<LedgerEntry>? TakeBackPartial(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<EntryGroup> groups)
    {
        List<LedgerEntry>? undo = null;
        foreach (EntryGroup group in groups)
        {
            int end = group.Start + group.Count;
            bool all = true;
            for (int i = group.Start; i < end; i++)
            {
                all &= inserted[i];
            }

            if (all)
            {
                continue;
            }

            for (int i = group.Start; i < end; i++)
            {
                if (inserted[i])
                {
                    (undo ??= []).Add(entries[i]);
                    inserted[i] = false;
                }
            }
        }

        return undo;
    }

    /// <summary>Whether a group's entries are one member's, with consecutive sequences.</summary>
    public static string? Check(IReadOnlyList<LedgerEntry> group)
    {
        if (group.Count == 0)
        {
            return "a group holds at least one entry";
        }

        for (int i = 1; i < group.Count; i++)
        {
            if (group[i].ProgramId != group[0].ProgramId || group[i].MemberId != group[0].MemberId || group[i].Sequence != group[i - 1].Sequence + 1)
            {
                return $"a group must be consecutive entries of one member, not {group[i - 1].MemberId}#{group[i - 1].Sequence} and {group[i].MemberId}#{group[i].Sequence}";
            }
        }

        return null;
    }
}

/// <summary>
/// Entry <see cref="Index"/> of a batch is part of a step of a change made under the lock
/// <see cref="LockName"/> at <see cref="Epoch"/> (see <see cref="ILedgerStore.LockAsync"/>): it is
/// written only while no later hold of that lock exists.
/// </summary>
public readonly record struct EntryFence(int Index, string LockName, long Epoch)
{
    /// <summary>
    /// Marks not inserted, and returns, the inserted entries whose lock has a
    /// <paramref name="latest"/> epoch larger than their fence's; null when none. The store
    /// removes them in the same transaction, as it does <see cref="EntryGroups.TakeBackPartial"/>'s.
    /// </summary>
    public static List<LedgerEntry>? TakeBackStale(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<EntryFence> fences, IReadOnlyDictionary<string, long> latest)
    {
        List<LedgerEntry>? stale = null;
        foreach (EntryFence fence in fences)
        {
            if (inserted[fence.Index] && latest.TryGetValue(fence.LockName, out long epoch) && epoch > fence.Epoch)
            {
                inserted[fence.Index] = false;
                (stale ??= []).Add(entries[fence.Index]);
            }
        }

        return stale;
    }
}

/// <summary>
/// The lock and epoch a queued change was decided under (see <see cref="EntryFence"/>). A class:
/// every queued item has room for one, and nearly all (purchases) have none.
/// </summary>
public sealed record LockFence(string LockName, long Epoch);
