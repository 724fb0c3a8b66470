using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;
using static Loyalty.Tests.Rules.RuleBuilders;

namespace Loyalty.Tests.Rules;

/// <summary>Returns reverse proportionally and never more than was earned; tiers move by the ladder's rules.</summary>
public sealed class ReturnAndTierRulesTests
{
    /// <summary>base 100 (lines a 60.00 at x1, wine 40.00 at x2 = 80 with the product component) plus a 90-point campaign.</summary>
    private static readonly LedgerEntry Original = new(
        "p", "m", 2, LedgerEntryKind.Earn, new Points(240), "t1", 1, "store-1", 100_00, "USD", null, null, Wednesday, Wednesday,
        1, null, new EarnDetails
        {
            Components =
            [
                new BreakdownComponent(ComponentKind.Base, "base", 60),
                new BreakdownComponent(ComponentKind.Product, "category:wine", 80),
                new BreakdownComponent(ComponentKind.Campaign, "double", 100),
            ],
            Lines = [new SkuAmount("a", 60_00, Multipliers.One, "base"), new SkuAmount("w", 40_00, 20_000, "category:wine")],
        });

    private static PurchaseReturn ByAmount(long amountMinor, string txn = "r1") =>
        new(txn, "p", "m", "t1", "store-1", new Money(amountMinor, "USD"), Wednesday, []);

    private static PurchaseReturn ByLines(params (string Sku, long AmountMinor)[] lines) =>
        new("r1", "p", "m", "t1", "store-1", new Money(0, "USD"), Wednesday, [.. lines.Select(l => new ReturnLine(l.Sku, 1, l.AmountMinor))]);

    [Fact]
    public void Return_ByAmount_ReversesEveryComponentInProportion()
    {
        ReversalResult? r = Reversal.Compute(Original, null, ByAmount(25_00), out string? error);

        Assert.Null(error);
        Assert.Equal([15L, 20L, 25L], r!.Components.Select(c => c.Points));
        Assert.Equal(60, r.Total);
    }

    [Fact]
    public void Return_ByLines_ReversesTheLinesOwnPointsAndTheirWeightedShareOfBonuses()
    {
        // The wine line's own component goes back whole; it is 40 % of the money but earned at x2,
        // so it carries 80 of the 140 weighted basket: 100 x 80/140 of the campaign, truncated.
        ReversalResult? wine = Reversal.Compute(Original, null, ByLines(("w", 40_00)), out string? error);

        Assert.Null(error);
        Assert.Equal([0L, 80L, 57L], wine!.Components.Select(c => c.Points));
    }

    [Fact]
    public void Return_ByLinesInPieces_EndsExactlyAtTheOriginal()
    {
        var state = new ReturnProgress(components: 3);
        long total = 0;
        foreach ((string sku, long amount) in new[] { ("a", 10_00L), ("w", 15_00L), ("a", 50_00L), ("w", 25_00L) })
        {
            // As the decision does: a progress with no return yet is none.
            ReversalResult r = Reversal.Compute(Original, state.Count > 0 ? state : null, ByLines((sku, amount)), out _)!;
            total += r.Total;
            state.Add(new ReturnDetails { Components = r.Components, Lines = r.Lines, ReturnedAmountMinor = r.ReturnedAmountMinor });
        }

        Assert.Equal(240, total);
        Assert.Equal([60L, 80L, 100L], state.Reversed);
    }

    [Fact]
    public void Return_RepeatedPartialReturns_NeverExceedAndEndExactlyAtTheOriginal()
    {
        var state = new ReturnProgress(components: 3);
        long total = 0;
        foreach (long part in new long[] { 33_33, 33_33, 33_34 })
        {
            ReversalResult r = Reversal.Compute(Original, state, ByAmount(part), out _)!;
            total += r.Total;
            Assert.Equal(part, r.ReturnedAmountMinor);
            state.Add(new ReturnDetails { Components = r.Components, Lines = r.Lines, ReturnedAmountMinor = r.ReturnedAmountMinor });

            Assert.True(total <= 240);
        }

        Assert.Equal(240, total);
        Assert.Equal([60L, 80L, 100L], state.Reversed);
        Assert.Null(Reversal.Compute(Original, state, ByAmount(1), out string? more));
        Assert.Contains("exceeds the purchase", more, StringComparison.Ordinal);
    }

    [Fact]
    public void Return_ByLines_EveryUnitBack_IsFull_ThoughTheTillRefundedLessThanTheLineCost()
    {
        // Three units for 10.00, refunded one at a time at 3.33: every unit back is the whole line.
        LedgerEntry bought = Original with
        {
            Points = new Points(10),
            AmountMinor = 10_00,
            Details = new EarnDetails { Components = [new BreakdownComponent(ComponentKind.Base, "base", 10)], Lines = [new SkuAmount("a", 10_00, Multipliers.One, "base", 3)] },
        };
        var state = new ReturnProgress(components: 1);
        long total = 0;
        var full = new List<bool>();
        for (int i = 0; i < 3; i++)
        {
            ReversalResult r = Reversal.Compute(bought, state.Count > 0 ? state : null, ByLines(("a", 3_33)), out string? error)!;
            Assert.Null(error);
            total += r.Total;
            full.Add(r.Full);
            state.Add(new ReturnDetails { Components = r.Components, Lines = r.Lines, ReturnedAmountMinor = r.ReturnedAmountMinor, Full = r.Full });
        }

        Assert.Equal([false, false, true], full);
        Assert.Equal(10, total);
        Assert.True(Reversal.Status(bought, state).Full);
        Assert.Null(Reversal.Compute(bought, state, ByLines(("a", 1)), out string? fourth));
        Assert.Contains("1 returned now and 3 before, of 3 units bought", fourth, StringComparison.Ordinal);
    }

    [Fact]
    public void Return_ByLines_OfABasketOfExcludedLines_TakesBackTheCampaignsFlatBonusInTheMoneysShare()
    {
        // A gift card earns nothing itself (weight 0), but the purchase met a campaign's threshold for a flat 200.
        LedgerEntry bought = Original with
        {
            Points = new Points(200),
            AmountMinor = 20_00,
            Details = new EarnDetails { Components = [new BreakdownComponent(ComponentKind.Campaign, "spend-20", 200)], Lines = [new SkuAmount("gift", 20_00, 0, "excluded:gift", 2)] },
        };

        ReversalResult? half = Reversal.Compute(bought, null, ByLines(("gift", 10_00)), out string? error);
        ReversalResult? whole = Reversal.Compute(bought, null, new PurchaseReturn("r1", "p", "m", "t1", "store-1", new Money(0, "USD"), Wednesday, [new ReturnLine("gift", 2, 20_00)]), out _);

        Assert.Null(error);
        Assert.Equal(100, half!.Total);
        Assert.Equal((200L, true), (whole!.Total, whole.Full));
    }

    public static TheoryData<string, PurchaseReturn, ReturnProgress?, string> Refusals => new()
    {
        { "more than the purchase", ByAmount(100_01), null, "exceeds the purchase" },
        { "more of a sku than bought", ByLines(("w", 40_01)), null, "for sku 'w'" },
        { "a sku that was not bought", ByLines(("zzz", 1_00)), null, "sku 'zzz' was not part" },
        { "lines after a return by amount", ByLines(("a", 1_00)), ReturnProgress.Of(Original, [Original with { Kind = LedgerEntryKind.Return, Details = new ReturnDetails { Components = [], ReturnedAmountMinor = 1_00 } }]), "returned by amount before" },
        { "another currency", ByAmount(1_00) with { Amount = new Money(1_00, "EUR") }, null, "currency 'EUR'" },
    };

    [Fact]
    public void Return_ByLinesOfAPurchaseWithoutLines_IsRefused()
    {
        LedgerEntry totalOnly = Original with { Details = Original.DetailsAs<EarnDetails>()! with { Lines = null } };

        Assert.Null(Reversal.Compute(totalOnly, null, ByLines(("a", 1_00)), out string? error));
        Assert.Equal("the purchase had no line items; return it by amount", error);
    }

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Return_NotFittingThePurchase_IsRefusedWithTheReason(string rule, PurchaseReturn request, ReturnProgress? progress, string reason)
    {
        ReversalResult? r = Reversal.Compute(Original, progress, request, out string? error);

        Assert.Null(r);
        Assert.True(error is not null && error.Contains(reason, StringComparison.Ordinal), $"{rule}: {error}");
    }

    [Fact]
    public void ReturnRequest_Malformed_IsRefusedNamingTheField()
    {
        DateTimeOffset now = Wednesday.AddHours(1);
        Assert.Contains("needs lines or an amount_minor", ByAmount(0).Check(now), StringComparison.Ordinal);
        Assert.Contains("0 or the sum", (ByLines(("a", 5_00)) with { Amount = new Money(4_00, "USD") }).Check(now), StringComparison.Ordinal);
        Assert.Contains("must differ", (ByAmount(1_00) with { OriginalTransactionId = "r1" }).Check(now), StringComparison.Ordinal);
        Assert.Contains("quantity", (ByLines(("a", 5_00)) with { Lines = [new ReturnLine("a", 0, 5_00)] }).Check(now), StringComparison.Ordinal);
        Assert.Null(ByLines(("a", 5_00)).Check(now));
    }

    private static readonly TierLadder Ladder = new(TierBasis.Points, 365, 30,
    [
        new TierDefinition("member", 0, Multipliers.One, []),
        new TierDefinition("silver", 1_000, 12_500, []),
        new TierDefinition("gold", 5_000, 15_000, ["lounge"]),
    ]);

    [Theory]
    [InlineData(999, 0)]
    [InlineData(1_000, 1)]
    [InlineData(4_999, 1)]
    [InlineData(1_000_000, 2)]
    public void Tier_Reached_IsTheHighestThresholdMet(long qualifying, int tier)
    {
        Assert.Equal(tier, Tiering.Reached(Ladder, qualifying));
    }

    [Theory]
    [InlineData("before the review is due", 2, 10, 0, 2)]
    [InlineData("inside the grace period", 2, 365 + 29, 0, 2)]
    [InlineData("after grace, not requalified: one tier down", 2, 365 + 30, 0, 1)]
    [InlineData("after grace, still qualifies: kept", 2, 365 + 30, 5_000, 2)]
    [InlineData("two reviews passed: two tiers down, one at a time", 2, 365 + 365 + 30, 0, 0)]
    [InlineData("the entry tier never moves down", 0, 5_000, 0, 0)]
    public void Tier_Review_DowngradesOnlyAtReviewsOneTierAtATime(string rule, int tier, int daysLater, long qualifying, int expected)
    {
        DateTimeOffset upgradedAt = Wednesday;
        DateTimeOffset? reviewAt = tier == 0 ? null : upgradedAt.AddDays(365);

        (int index, _) = Tiering.Review(tier, reviewAt, Ladder, RuleBuilders.Qualifying(qualifying), upgradedAt.AddDays(daysLater));

        Assert.True(expected == index, $"{rule}: got {index}");
    }

    [Fact]
    public void MemberState_ReturnsAndPendingLots_ReplayToTheSameState()
    {
        LedgerEntry enrol = new("p", "m", 1, LedgerEntryKind.Enrol, new Points(50), null, 0, null, 0, null, null, null, Wednesday, Wednesday);
        LedgerEntry earn = Original with { AvailableAt = Wednesday.AddDays(30) };
        LedgerEntry partial = new("p", "m", 3, LedgerEntryKind.Return, new Points(-60), "r1", 2, "store-1", 25_00, "USD", null, "t1",
            Wednesday.AddDays(1), Wednesday.AddDays(1), 1, null,
            new ReturnDetails { Components = [new(ComponentKind.Base, "base", 15), new(ComponentKind.Product, "category:wine", 20), new(ComponentKind.Campaign, "double", 25)], PendingReversed = 60, ReturnedAmountMinor = 25_00, OriginalRecordedAt = Wednesday });
        var live = new MemberState();
        foreach (LedgerEntry e in new[] { enrol, earn, partial })
        {
            live.Apply(e, 4);
        }

        MemberState replayed = Snapshots.RoundTrip(live);
        replayed.Lots.Mature(Wednesday.AddDays(31));
        live.Lots.Mature(Wednesday.AddDays(31));

        Assert.Equal(Snapshots.Describe(live), Snapshots.Describe(replayed));
        Assert.Equal((230L, 0L), (live.Balance.Value, live.Lots.PendingTotal.Value)); // 50 + 240 - 60, all matured
        Assert.Equal(75, live.Earnings.CampaignEarned("double"));
    }

    private static TierLadder NamedLadder(params string[] names) =>
        new(TierBasis.Points, 365, 0, [.. names.Select((n, i) => new TierDefinition(n, i * 100, Multipliers.One, []))]);

    [Fact]
    public void ALadderThatDropsATier_IsRefused_UnlessTheNameIsMappedToATierOfIt()
    {
        TierLadder before = NamedLadder("member", "silver", "gold");

        TierLadder? dropped = NamedLadder("member", "silver", "Gold").Follow(before, out string? refused);
        TierLadder? renamed = (NamedLadder("member", "silver", "Gold") with { Renamed = new Dictionary<string, string> { ["gold"] = "Gold" } }).Follow(before, out string? accepted);
        TierLadder? typo = (NamedLadder("member", "silver", "gold") with { Renamed = new Dictionary<string, string> { ["bronze"] = "silver" } }).Follow(before, out string? unknown);

        Assert.Null(dropped);
        Assert.Equal("tiers: tier 'gold' is not in the new ladder, and its members would fall to 'member' without an entry: map it to the tier they move to in tiers.renamed (\"gold\": \"...\"), or keep it", refused);
        Assert.Null(accepted);
        Assert.Equal((2, "Gold", 2), (renamed!.IndexOf("gold"), renamed.Resolve("gold"), renamed.IndexOf("Gold")));
        Assert.Null(typo);
        Assert.Equal("tiers.renamed: 'bronze' is not a tier the program had", unknown);
    }

    [Fact]
    public void OldTierNames_AreKeptAcrossLaterChanges_FollowTheirTier_AndCannotNameANewTier()
    {
        TierLadder first = NamedLadder("standard", "silver", "gold");
        TierLadder second = (NamedLadder("member", "silver", "Gold") with { Renamed = new Dictionary<string, string> { ["gold"] = "Gold" } }).Follow(first, out _)!;

        // A later change that says nothing of the old names, and renames Gold again.
        TierLadder third = (NamedLadder("member", "silver", "Platinum") with { Renamed = new Dictionary<string, string> { ["Gold"] = "Platinum" } }).Follow(second, out string? refused)!;
        TierLadder? reused = NamedLadder("member", "silver", "Platinum", "gold").Follow(third, out string? reusedRefused);

        Assert.Null(refused);
        // The old entry tier needs no mapping: its members are in the entry tier either way.
        Assert.Equal(["Gold=Platinum", "gold=Platinum", "standard=member"], third.Renamed!.Select(r => $"{r.Key}={r.Value}").Order(StringComparer.Ordinal));
        Assert.Equal((2, 2, 0), (third.IndexOf("gold"), third.IndexOf("Gold"), third.IndexOf("standard")));
        Assert.Null(reused);
        Assert.Equal("tiers: 'gold' is an old name of tier 'Platinum', and members may still hold it by that name: give the new tier another name", reusedRefused);
    }

    [Fact]
    public void OldNamesSentBackAsTheyAreKept_SayNothingNew_AndAnOldNameMayNameItsOwnTierAgain()
    {
        TierLadder first = NamedLadder("member", "silver", "gold");
        TierLadder basic = NamedLadder("basic", "silver", "gold").Follow(first, out _)!;

        // A client that read the program back sends its old names with the change (before, refused: "member" maps to no tier of the new ladder).
        TierLadder? entry = (NamedLadder("entry", "silver", "gold") with { Renamed = new Dictionary<string, string> { ["member"] = "basic", ["basic"] = "entry" } }).Follow(basic, out string? echoRefused);
        TierLadder? back = (NamedLadder("member", "silver", "gold") with { Renamed = new Dictionary<string, string> { ["entry"] = "member" } }).Follow(entry!, out string? backRefused);

        Assert.Equal(["member=basic"], basic.Renamed!.Select(r => $"{r.Key}={r.Value}"));
        Assert.Null(echoRefused);
        Assert.Equal(["basic=entry", "member=entry"], entry!.Renamed!.Select(r => $"{r.Key}={r.Value}").Order(StringComparer.Ordinal));
        // "member" is the entry tier again, which is where its old holders are: no longer an old name.
        Assert.Null(backRefused);
        Assert.Equal(["basic=member", "entry=member"], back!.Renamed!.Select(r => $"{r.Key}={r.Value}").Order(StringComparer.Ordinal));
    }

    [Fact]
    public void TheEntryTier_CanNeitherMoveUpTheLadder_NorBeMappedToAHigherTier()
    {
        TierLadder before = NamedLadder("member", "gold");

        TierLadder? movedUp = NamedLadder("basic", "member", "gold").Follow(before, out string? movedUpRefused);
        TierLadder? mappedUp = (NamedLadder("basic", "silver", "gold") with { Renamed = new Dictionary<string, string> { ["member"] = "silver" } }).Follow(before, out string? mappedUpRefused);
        TierLadder? below = NamedLadder("basic", "silver", "gold").Follow(before, out string? belowRefused);

        // Before, both were taken, and the entry tier's members held the higher tier for good: they have no review date.
        Assert.Null(movedUp);
        Assert.Equal("tiers: 'member' names the entry tier, whose members hold it without a review date: they can only move to the new entry tier 'basic'; give the higher tier another name", movedUpRefused);
        Assert.Null(mappedUp);
        Assert.Equal(movedUpRefused, mappedUpRefused);
        Assert.Null(belowRefused);
        Assert.Equal((0, "basic"), (below!.IndexOf("member"), below.Resolve("member")));
    }

    [Fact]
    public void AnOldNameOfTheEntryTier_CannotBeMappedToAHigherTierLater()
    {
        TierLadder basic = NamedLadder("basic", "gold").Follow(NamedLadder("standard", "gold"), out _)!;

        TierLadder? mappedUp = (NamedLadder("basic", "gold") with { Renamed = new Dictionary<string, string> { ["standard"] = "gold" } }).Follow(basic, out string? refused);

        // Before, the old entry name was re-pointed at gold, and its holders kept gold with no review date.
        Assert.Null(mappedUp);
        Assert.StartsWith("tiers: 'standard' names the entry tier", refused, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("gold", "member", "tiers.renamed: 'gold' is a tier of the new ladder; only names it no longer has are mapped")]
    [InlineData("silver", "platinum", "tiers.renamed: 'silver' maps to 'platinum', which is not a tier of the new ladder")]
    public void AMapping_OfANameTheNewLadderHas_OrToATierItHasNot_IsRefused(string old, string tier, string message)
    {
        TierLadder? followed = (NamedLadder("member", "gold") with { Renamed = new Dictionary<string, string> { [old] = tier } })
            .Follow(NamedLadder("member", "silver", "gold"), out string? refused);

        Assert.Null(followed);
        Assert.Equal(message, refused);
    }

    [Fact]
    public void ProgramSettings_WithMoreOldTierNamesThanTheLimit_OrAMalformedOne_AreInvalid()
    {
        ProgramSettings settings = new("P", "USD", 2, 1);
        Dictionary<string, string> tooMany = Enumerable.Range(0, Limits.TierRenamesMax + 1).ToDictionary(i => "old" + i, _ => "member");

        string? many = (settings with { Tiers = NamedLadder("member") with { Renamed = tooMany } }).Check();
        string? malformed = (settings with { Tiers = NamedLadder("member") with { Renamed = new Dictionary<string, string> { ["old one"] = "member" } } }).Check();

        Assert.Equal($"tiers.renamed has more than {Limits.TierRenamesMax} names", many);
        Assert.StartsWith("tiers.renamed", malformed, StringComparison.Ordinal);
    }

    [Fact]
    public void ACampaign_NamingATierByItsOldName_IsRefused()
    {
        TierLadder ladder = (NamedLadder("member", "Gold") with { Renamed = new Dictionary<string, string> { ["gold"] = "Gold" } }).Follow(NamedLadder("member", "gold"), out _)!;
        var campaign = new Campaign("double", "Double", DateTimeOffset.UnixEpoch, DateTimeOffset.MaxValue, [], 0, 24, [], ["gold"], [], 20_000, 0, 0, 0);

        string? refused = new ProgramSettings("P", "USD", 2, 1, Campaigns: [campaign]).NamesRenamedTier(ladder);

        Assert.Equal("campaigns[0].tiers: tier 'gold' is now 'Gold'", refused);
    }

    [Fact]
    public void ALadderKeepsAtMostItsLimitOfOldNames()
    {
        TierLadder ladder = NamedLadder("member", "gold");
        string? refused = null;
        for (int i = 0; i <= Limits.TierRenamesMax && refused is null; i++)
        {
            // Each change renames the top tier once more.
            TierLadder? next = (NamedLadder("member", "gold" + i) with { Renamed = new Dictionary<string, string> { [ladder.Tiers[1].Name] = "gold" + i } }).Follow(ladder, out refused);
            ladder = next ?? ladder;
        }

        Assert.Equal(Limits.TierRenamesMax, ladder.Renamed!.Count);
        Assert.Equal($"tiers.renamed: the ladder would keep {Limits.TierRenamesMax + 1} old tier names, more than {Limits.TierRenamesMax}", refused);
        Assert.Equal(1, ladder.IndexOf("gold"));
    }
}
