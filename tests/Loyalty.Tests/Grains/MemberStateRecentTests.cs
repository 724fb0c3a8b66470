using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Grains;

/// <summary>The transaction ids a member remembers, to answer resends without the database.</summary>
public sealed class MemberStateRecentTests
{
    private const int RecentMax = 16;

    [Fact]
    public void FindRecent_AfterMoreThanTheLimit_FindsTheNewestAndForgetsTheOldest()
    {
        var state = new MemberState();
        for (int i = 1; i <= RecentMax + 4; i++)
        {
            state.Apply(Adjustment(i), RecentMax);
        }

        Assert.Equal(RecentMax, state.RecentCount);
        Assert.All(Enumerable.Range(1, 4), i => Assert.Null(state.FindRecent($"t{i}")));
        Assert.All(Enumerable.Range(5, RecentMax), i => Assert.Equal(i, state.FindRecent($"t{i}")!.Value.Sequence));
        Assert.Null(state.FindRecent("t999"));
    }

    [Fact]
    public void FindRecent_AfterASnapshotRoundTrip_AndASmallerLimit_KeepsTheNewest()
    {
        var state = new MemberState();
        for (int i = 1; i <= 10; i++)
        {
            state.Apply(Adjustment(i), RecentMax);
        }

        MemberState restored = Snapshots.RoundTrip(state);
        restored.Apply(Adjustment(11), 4);

        Assert.Equal(4, restored.RecentCount);
        Assert.All(Enumerable.Range(8, 4), i => Assert.Equal(i, restored.FindRecent($"t{i}")!.Value.Sequence));
        Assert.Null(restored.FindRecent("t7"));
        Assert.Equal(new Points(3), restored.FindRecent("t11")!.Value.Points);
    }

    [Fact]
    public void RememberingATransaction_AllocatesNothing_OnceTheRingExists()
    {
        LedgerEntry[] entries = [.. Enumerable.Range(2, 200).Select(Adjustment)];
        var recent = new RecentTransactions();
        for (int i = 0; i < RecentMax; i++)
        {
            // The ring grows to the limit with the first transactions; from then on it is reused.
            recent.Add($"warm{i}", 1, new Points(1), 1, RecentMax);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        foreach (LedgerEntry e in entries)
        {
            recent.Add(e.TransactionId!, e.Fingerprint, e.Points, e.Sequence, RecentMax);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void TheRing_GrowsWithTheTransactions_UpToTheLimit_ForgettingNoneOfTheNewest()
    {
        string[] ids = [.. Enumerable.Range(0, RecentMax + 9).Select(i => $"t{i}")];
        var recent = new RecentTransactions();
        var slots = new List<int>();
        for (int i = 1; i < ids.Length; i++)
        {
            // With room for the next one made beforehand (as Prepare does at enrolment and at
            // load), remembering it allocates nothing even while the ring grows.
            recent.Prepare(RecentMax);
            long before = GC.GetAllocatedBytesForCurrentThread();
            recent.Add(ids[i], i, new Points(i), i, RecentMax);
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

            slots.Add(recent.Slots);
            Assert.Equal(Math.Min(i, RecentMax), recent.Count);
            for (int k = Math.Max(1, i - RecentMax + 1); k <= i; k++)
            {
                Assert.Equal(k, recent.Find(ids[k])!.Value.Sequence);
            }
        }

        Assert.Equal([2, 2, 4, 4, 8, 8, 8, 8], slots.Take(8));
        Assert.All(slots.Skip(8), n => Assert.Equal(RecentMax, n));
        Assert.Null(recent.Find(ids[ids.Length - RecentMax - 1]));
    }

    [Fact]
    public void AMemberWithOnePurchase_HoldsARingOfTwo()
    {
        var state = new MemberState();
        state.Apply(Adjustment(1), RecentMax);
        state.Prepare(RecentMax);

        Assert.Equal(2, state.RecentSlots);
        Assert.Equal(1, state.FindRecent("t1")!.Value.Sequence);
    }

    private static LedgerEntry Adjustment(int i) =>
        new("p", "m", i, LedgerEntryKind.Adjust, new Points(3), $"t{i}", i, null, 0, null, "test", null, DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch);
}
