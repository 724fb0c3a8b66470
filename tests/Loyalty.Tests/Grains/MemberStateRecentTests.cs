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
            state.Apply(Entries.Earn("p", "m", i, 10, $"t{i}"), RecentMax);
        }

        Assert.All(Enumerable.Range(1, 4), i => Assert.Null(state.FindRecent($"t{i}")));
        Assert.All(Enumerable.Range(5, RecentMax), i => Assert.Equal(i, state.FindRecent($"t{i}")!.Sequence));
        Assert.Null(state.FindRecent("t999"));
    }

    [Fact]
    public void FindRecent_AfterTheListIsReplaced_AsByARestoredSnapshot_SearchesTheNewList()
    {
        var state = new MemberState();
        state.Apply(Entries.Earn("p", "m", 1, 10, "old"), RecentMax);
        Assert.NotNull(state.FindRecent("old"));

        state.Recent = [new RecentTransaction("restored", 7, new Points(5), 9)];

        Assert.Null(state.FindRecent("old"));
        Assert.Equal(9, state.FindRecent("restored")!.Sequence);
        state.Apply(Entries.Earn("p", "m", 10, 10, "next"), RecentMax);
        Assert.Equal(10, state.FindRecent("next")!.Sequence);
        Assert.Equal(9, state.FindRecent("restored")!.Sequence);
    }
}
