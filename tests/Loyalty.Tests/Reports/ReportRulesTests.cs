using Loyalty.Host.Reports;
using Loyalty.Storage.Reports;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Reports;

/// <summary>The report's pure rules: how entries split into flows, how days group into periods, how money is derived.</summary>
public sealed class ReportRulesTests
{
    private static readonly DateTimeOffset Monday = new(2026, 11, 30, 10, 0, 0, TimeSpan.Zero);

    public static TheoryData<LedgerEntry> Entries() =>
    [
        Entry(LedgerEntryKind.Earn, 300, new EarnDetails { Components = [new(ComponentKind.Base, "base", 100), new(ComponentKind.Campaign, "double", 100), new(ComponentKind.Signup, "signup", 50), new(ComponentKind.Referral, "referral:x", 50)] }),
        Entry(LedgerEntryKind.Earn, 7, null),
        Entry(LedgerEntryKind.Enrol, 50, null),
        Entry(LedgerEntryKind.Return, -70, new ReturnDetails { PendingReversed = 40, ActiveReversed = 60, Restored = [new LotUse("l1", 30, Monday.AddYears(1))], PendingAvailableAt = Monday.AddDays(7) }),
        Entry(LedgerEntryKind.Redeem, -30, new RedeemDetails { RewardId = "mug", Lots = [new LotUse("l1", 20, Monday.AddYears(1)), new LotUse("l2", 10, null)] }),
        Entry(LedgerEntryKind.Expire, -25, new ExpireDetails { Lots = [new LotUse("l1", 25, Monday.AddYears(1))], InactivityDeadline = Monday }),
        Entry(LedgerEntryKind.Adjust, -12, null),
        Entry(LedgerEntryKind.Adjust, 12, null),
        Entry(LedgerEntryKind.ReferralReward, -40, null),
        Entry(LedgerEntryKind.MergedAway, -99, null),
        Entry(LedgerEntryKind.MergedIn, 99, null),
        Entry(LedgerEntryKind.Return, -70, new ReturnDetails { ActiveReversed = 100, Restored = [new LotUse("l1", 30, Monday.AddYears(1))], ExpiredUnrestored = [new LotUse("l0", 20, Monday)] }),
        Entry(LedgerEntryKind.Flags, 0, null),
        Entry((LedgerEntryKind)999, 5, null),
    ];

    [Fact]
    public void EveryMetric_HasItsOwnStoredCode()
    {
        // The codes are what report_totals stores: two figures sharing one would add into each other.
        short[] codes = [.. Enum.GetValues<ReportMetric>().Select(m => (short)m)];
        Assert.Equal(Enum.GetNames<ReportMetric>().Length, codes.Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(Entries))]
    public void EveryEntry_SplitsIntoFlows_WhoseSignedSumIsItsPoints(LedgerEntry entry)
    {
        var totals = new ReportTotals();
        totals.Add(entry);

        long signed = totals.Of("p").Sum(t => ReportFacts.SignOf(t.Metric) * t.Value);
        Assert.Equal(entry.Points.Value, signed);
        Assert.Equal(Enum.IsDefined(entry.Kind), !totals.Of("p").Any(t => t.Metric == ReportMetric.Other));
    }

    [Fact]
    public void AFullReturnsPointsWhoseLotExpiredSince_AreReturnedFromTheRedemption_AndExpire_InTheirCohort()
    {
        var totals = new ReportTotals();
        totals.Add(Entry(LedgerEntryKind.Return, -100, new ReturnDetails { ActiveReversed = 100, ExpiredUnrestored = [new LotUse("l0", 20, Monday.AddDays(-3))] }));

        ReportTotal[] t = [.. totals.Of("p")];
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday), ReportMetric.RedemptionsReturned, "", 20), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday), ReportMetric.Expired, "", 20), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday.AddDays(-3)), ReportMetric.CohortRedeemed, "", -20), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday.AddDays(-3)), ReportMetric.CohortExpired, "", 20), t);
    }

    [Fact]
    public void AReturnFromPendingPoints_CancelsTheirMaturity_AndRestoredPointsLeaveTheirCohort()
    {
        var totals = new ReportTotals();
        totals.Add(Entry(LedgerEntryKind.Return, -70, new ReturnDetails { PendingReversed = 40, ActiveReversed = 60, Restored = [new LotUse("l1", 30, Monday.AddYears(1))], PendingAvailableAt = Monday.AddDays(7) }));

        ReportTotal[] t = [.. totals.Of("p")];
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday.AddDays(7)), ReportMetric.PendingMatured, "", -40), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday), ReportMetric.PendingReversed, "", 40), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday.AddYears(1)), ReportMetric.CohortRedeemed, "", -30), t);
        Assert.Contains(new ReportTotal(ReportFacts.DayOf(Monday), ReportMetric.Reversed, "", 100), t);
    }

    [Fact]
    public void ExpiredAndRedeemedPoints_CountInTheLotsCohort_OnItsExpiryDay_AndUndatedLotsInNone()
    {
        var totals = new ReportTotals();
        totals.Add(Entry(LedgerEntryKind.Expire, -35, new ExpireDetails { Lots = [new LotUse("l1", 25, Monday.AddYears(1)), new LotUse("#balance", 10, null)], InactivityDeadline = Monday }));
        totals.Add(Entry(LedgerEntryKind.Redeem, -30, new RedeemDetails { RewardId = "mug", Lots = [new LotUse("l1", 20, Monday.AddYears(1)), new LotUse("l2", 10, null)] }));

        ReportTotal[] cohorts = [.. totals.Of("p").Where(t => t.Metric is ReportMetric.CohortExpired or ReportMetric.CohortRedeemed).OrderBy(t => t.Metric)];
        Assert.Equal([new(ReportFacts.DayOf(Monday.AddYears(1)), ReportMetric.CohortRedeemed, "", 20), new(ReportFacts.DayOf(Monday.AddYears(1)), ReportMetric.CohortExpired, "", 25)], cohorts);
    }

    [Fact]
    public void Periods_AreIsoWeeksFromMonday_CalendarMonthsAndYears_ClippedToTheAskedDays()
    {
        var sunday = new DateOnly(2026, 12, 6);

        Assert.Equal(new DateOnly(2026, 11, 30), ProgramReports.PeriodStart(sunday, V1.ReportGrouping.Week));
        Assert.Equal(new DateOnly(2026, 12, 7), ProgramReports.PeriodStart(sunday.AddDays(1), V1.ReportGrouping.Week));
        Assert.Equal(new DateOnly(2024, 2, 29), ProgramReports.PeriodEnd(new DateOnly(2024, 2, 1), V1.ReportGrouping.Month));
        Assert.Equal(new DateOnly(2026, 12, 31), ProgramReports.PeriodEnd(new DateOnly(2026, 1, 1), V1.ReportGrouping.Year));
        V1.ProgramReport report = Build(new DateOnly(2026, 12, 3), new DateOnly(2026, 12, 16), V1.ReportGrouping.Week, [], []);
        Assert.Equal(["2026-12-03..2026-12-06", "2026-12-07..2026-12-13", "2026-12-14..2026-12-16"], report.Periods.Select(p => $"{p.Start}..{p.End}"));
        Assert.Equal(3, ProgramReports.PeriodCount(new DateOnly(2026, 12, 3), new DateOnly(2026, 12, 16), V1.ReportGrouping.Week));
    }

    [Theory]
    [InlineData(1, V1.ReportGrouping.Day)]
    [InlineData(62, V1.ReportGrouping.Day)]
    [InlineData(63, V1.ReportGrouping.Week)]
    [InlineData(183, V1.ReportGrouping.Month)]
    [InlineData(1_828, V1.ReportGrouping.Year)]
    public void WithoutAGrouping_TheLengthOfThePeriodChoosesIt(int days, V1.ReportGrouping expected) =>
        Assert.Equal(expected, ProgramReports.AutomaticGrouping(days));

    [Fact]
    public void TheOpeningCarriesForward_AndMoneyIsRoundedHalfAwayFromZero_AtThePointValue()
    {
        var from = new DateOnly(2026, 12, 1);
        ReportTotal[] before = [new(0, ReportMetric.IssuedPurchases, "", 1_001), new(0, ReportMetric.Enrolled, "", 3)];
        ReportTotal[] days = [new(from.DayNumber, ReportMetric.Redeemed, "mug", 500), new(from.DayNumber + 1, ReportMetric.IssuedBonuses, "", 2)];

        V1.ProgramReport report = Build(from, from.AddDays(1), V1.ReportGrouping.Day, before, days, new AccountingPolicy(1_500, 2_000));

        Assert.Equal(1_001, report.Opening.Outstanding);
        Assert.Equal(1_502, report.Opening.LiabilityMinor); // 1,001 x 1.5 = 1,501.5
        Assert.Equal(1_202, report.Opening.DeferredRevenueMinor); // 1,502 x 0.8 = 1,201.6
        Assert.False(report.Opening.BreakageObserved);
        Assert.Equal(501, report.Periods[0].Closing.Outstanding);
        Assert.Equal(503, report.Total.Closing.Outstanding);
        Assert.Equal(-498, report.Total.Flows.Net);
        Assert.Equal(500, Assert.Single(report.Total.RedeemedByReward).Points);
        Assert.Equal(3, report.Total.Closing.Members);
    }

    [Fact]
    public void BreakageIsObservedOnMaturedLots_BetweenNoneAndAll()
    {
        var from = new DateOnly(2026, 12, 1);
        ReportTotal[] days = [new(from.DayNumber, ReportMetric.CohortRedeemed, "", 300), new(from.DayNumber, ReportMetric.CohortExpired, "", 100)];

        V1.ProgramBalances closing = Build(from, from, V1.ReportGrouping.Day, [], days, new AccountingPolicy(1_000, 9_000)).Total.Closing;
        V1.ProgramBalances onlyExpired = Build(from, from, V1.ReportGrouping.Day, [], [days[1]], new AccountingPolicy(1_000, 9_000)).Total.Closing;

        Assert.True(closing.BreakageObserved);
        Assert.Equal(2_500, closing.BreakageBp);
        Assert.Equal(10_000, onlyExpired.BreakageBp);
    }

    [Fact]
    public void TierMoves_CountUpOrDownByTheLadder_AndTheDistributionFollowsThem()
    {
        var from = DateOnly.FromDateTime(Monday.UtcDateTime);
        var ladder = new TierLadder(TierBasis.Points, 365, 0, [new("base", 0, Multipliers.One, []), new("silver", 100, Multipliers.One, []), new("gold", 500, Multipliers.One, [])]);
        var totals = new ReportTotals();
        totals.Add(Entry(LedgerEntryKind.Enrol, 0, new EnrolDetails { TierAfter = "base" }) with { Reference = "referrer" });
        totals.Add(Entry(LedgerEntryKind.Enrol, 0, new EnrolDetails { TierAfter = "base" }));
        totals.Add(Entry(LedgerEntryKind.Earn, 600, new EarnDetails { TierBefore = "base", TierAfter = "gold", Components = [new(ComponentKind.Referral, "referral:x", 10)] }));
        totals.Add(Entry(LedgerEntryKind.Earn, 5, new EarnDetails { DowngradedFrom = "gold", TierBefore = "silver", TierAfter = "silver" }));

        V1.MemberFigures members = Build(from, from, V1.ReportGrouping.Day, [], [.. totals.Of("p").OrderBy(t => t.Day)], settings: new ProgramSettings("P", "USD", 2, 1, Tiers: ladder)).Total.Members;

        Assert.Equal((1, 1), (members.Upgrades, members.Downgrades));
        Assert.Equal(["base:1", "silver:1", "gold:0"], members.Tiers.Select(t => $"{t.Tier}:{t.Members}"));
        Assert.Equal((1, 1, 10_000), (members.ReferralsMade, members.ReferralsQualified, members.ReferralConversionBp));
    }

    [Fact]
    public void RepeatAndParticipation_AreGivenOnlyWhereTheyAreExact_ARangeFromAPeriodsFirstDayAndEndingWithinIt()
    {
        // Two members enrolled; each buys twice in November 2026: "a" on Wednesday the 4th and
        // Friday the 6th, "b" twice on Monday the 9th. The grain marks each purchase as its
        // member's first or second of the day, week, month and year; the totals below are those marks.
        int Day(int d) => new DateOnly(2026, 11, d).DayNumber;
        ReportTotal Mark(int d, ReportMetric metric, PurchaseActivity.Period period) => new(Day(d), metric + (short)period, "", 1);
        IEnumerable<ReportTotal> Marks(int d, ReportMetric metric, params PurchaseActivity.Period[] periods) => periods.Select(p => Mark(d, metric, p));
        PurchaseActivity.Period[] all = [PurchaseActivity.Period.Day, PurchaseActivity.Period.Week, PurchaseActivity.Period.Month, PurchaseActivity.Period.Year];
        ReportTotal[] before = [new(Day(1) - 30, ReportMetric.Enrolled, "", 2)];
        ReportTotal[] days =
        [
            .. Marks(4, ReportMetric.ActiveDay, all),
            .. Marks(6, ReportMetric.ActiveDay, PurchaseActivity.Period.Day), .. Marks(6, ReportMetric.RepeatDay, all[1..]),
            .. Marks(9, ReportMetric.ActiveDay, all), .. Marks(9, ReportMetric.RepeatDay, all),
        ];
        ReportTotal[] Between(int first, int last) => [.. days.Where(t => t.Day >= Day(first) && t.Day <= Day(last))];

        // November the 1st to the 20th, by day: the total is exact as a month cut short by its last day.
        V1.MemberFigures monthSoFar = Build(new(2026, 11, 1), new(2026, 11, 20), V1.ReportGrouping.Day, before, Between(1, 20)).Total.Members;
        // The 5th to the 20th, by week: the first week starts on a Thursday, after a's first purchase of it.
        V1.ProgramReport midWeek = Build(new(2026, 11, 5), new(2026, 11, 20), V1.ReportGrouping.Week, before, Between(5, 20));
        // The whole month by day is counted as a month, not as a sum of days (which would miss a's return on another day).
        V1.MemberFigures byDay = Build(new(2026, 11, 1), new(2026, 11, 30), V1.ReportGrouping.Day, before, Between(1, 30)).Total.Members;

        Assert.Equal((2L, true, 2L, 10_000, 10_000), (monthSoFar.Active, monthSoFar.ActiveExact, monthSoFar.Repeat, monthSoFar.RepeatRateBp, monthSoFar.ParticipationBp));
        Assert.Equal((false, false, false, false, false), (midWeek.Total.Members.ActiveExact, midWeek.Total.Members.HasRepeat,
            midWeek.Total.Members.HasRepeatRateBp, midWeek.Total.Members.HasParticipationBp, midWeek.Total.Members.HasRevenuePerActiveMemberMinor));
        // Its first week (the 5th to the 8th) holds a's second purchase of the week but not its
        // first: a repeat without an active member, not a figure to give. The later weeks are whole
        // or cut short by their last day only.
        Assert.Equal(["2026-11-05:False:False", "2026-11-09:True:True", "2026-11-16:True:True"],
            midWeek.Periods.Select(p => $"{p.Start}:{p.Members.ActiveExact}:{p.Members.HasRepeatRateBp}"));
        Assert.Equal((0L, 1L, 10_000), (midWeek.Periods[0].Members.Active, midWeek.Periods[1].Members.Active, midWeek.Periods[1].Members.RepeatRateBp));
        Assert.Equal((2L, true, 10_000), (byDay.Active, byDay.ActiveExact, byDay.RepeatRateBp));
        string firstWeek = midWeek.Csv.Split('\n')[1];
        Assert.Contains(",,false,,,", firstWeek, StringComparison.Ordinal);
    }

    [Fact]
    public void AMergedAwayMember_LeavesTheTierItsEntriesRecorded_NotTheOneAReviewDueAtTheMergeGives()
    {
        // Recorded gold; a review due at the merge lowers it to silver, and the transfer carries
        // silver. Reports counted it in gold: gold is the tier it leaves.
        var transfer = new MergeTransfer("d", 0, [], [], "silver", null, null, [], 0, 0, 0, 0, [], 0);
        LedgerEntry away = Entry(LedgerEntryKind.MergedAway, 0, new MergedAwayDetails { Merge = transfer, TierRecorded = "gold" });
        LedgerEntry older = Entry(LedgerEntryKind.MergedAway, 0, new MergedAwayDetails { Merge = transfer });
        var totals = new ReportTotals();
        totals.Add(away);
        var fromOlder = new ReportTotals();
        fromOlder.Add(older);

        Assert.Equal(["MergedAway::1", "TierLeft:gold:1"], totals.Of("p").Select(t => $"{t.Metric}:{t.Key}:{t.Value}").Order(StringComparer.Ordinal));
        Assert.Contains(fromOlder.Of("p"), t => t is { Metric: ReportMetric.TierLeft, Key: "silver" });
    }

    private static V1.ProgramReport Build(DateOnly from, DateOnly to, V1.ReportGrouping grouping, ReportTotal[] before, ReportTotal[] days, AccountingPolicy? accounting = null, ProgramSettings? settings = null) =>
        ProgramReports.Build("p", settings ?? new ProgramSettings("P", "USD", 2, 1, Accounting: accounting), from, to, grouping, before, days, csv: true);

    private static LedgerEntry Entry(LedgerEntryKind kind, long points, EntryDetails? details) =>
        new("p", "m", 1, kind, new Points(points), "t", 0, null, kind == LedgerEntryKind.Earn ? 10_00 : 0, "USD", null, null, Monday, Monday, Details: details);
}
