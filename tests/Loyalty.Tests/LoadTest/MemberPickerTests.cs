using Loyalty.LoadTest;

namespace Loyalty.Tests.LoadTest;

/// <summary>The load tester's choice of members.</summary>
public sealed class MemberPickerTests
{
    [Theory]
    [InlineData(1_000, 4)]
    [InlineData(1_001, 4)]
    [InlineData(7, 3)]
    public void InTurn_StreamsWithOneStep_VisitEveryMemberOnceBeforeAnyTwice(int members, int streams)
    {
        MemberPicker[] pickers = [.. Enumerable.Range(0, streams).Select(s => MemberPicker.InTurn(members, first: s, step: streams))];
        var seen = new List<int>();

        // The streams take turns, as the load tester's streams do on average.
        for (int i = 0; seen.Count < members; i++)
        {
            seen.Add(pickers[i % streams].Next());
        }

        Assert.Equal(members, seen.Distinct().Count());
        Assert.All(seen, m => Assert.InRange(m, 0, members - 1));
    }

    [Fact]
    public void Parse_UnknownOrder_IsRefused()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--order", "shuffled"]));

        Assert.Contains("--order", error.Message);
    }

    [Fact]
    public void Parse_SequentialOrderWithZipf_IsRefused()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--order", "sequential", "--zipf", "1.1"]));

        Assert.Contains("--zipf", error.Message);
    }
}
