using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Domain;

/// <summary>
/// The member's state split by concern (lots, earn history, referrals, returns): each part keeps
/// its bound and its order whatever the ledger holds, and an entry the state cannot read changes
/// nothing.
/// </summary>
public sealed class MemberStateConcernsTests
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 9, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Apply_UnknownKind_ThrowsBeforeChangingAnything()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 10, Start), 8);
        string before = Snapshots.Describe(state);

        var unknown = Entry(2, (LedgerEntryKind)999, 5, Start.AddMinutes(1));

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => state.Apply(unknown, 8));
        Assert.Contains("unknown kind 999", e.Message, StringComparison.Ordinal);
        Assert.Equal(before, Snapshots.Describe(state));
    }

    [Fact]
    public void EveryKnownKind_IsApplied_NoneFallsThroughToUnknown()
    {
        // A kind added to the enum without a line in Apply's table would throw "unknown kind" here.
        foreach (LedgerEntryKind kind in Enum.GetValues<LedgerEntryKind>())
        {
            var state = new MemberState();
            LedgerEntry entry = Entry(1, kind, 0, Start) with { Details = DetailsFor(kind) };
            Exception? thrown = Record.Exception(() => state.Apply(entry, 8));
            Assert.False(thrown is InvalidOperationException { Message: var m } && m.Contains("unknown kind", StringComparison.Ordinal), $"{kind} is not in Apply's table");
        }
    }

    [Fact]
    public void EarnHistory_FourHundredDaysOfEarns_KeepsEveryBucketListWithinItsBound()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        for (int day = 0; day < 400; day++)
        {
            DateTimeOffset at = Start.AddDays(day);
            LedgerEntry earn = Entry(day + 2, LedgerEntryKind.Earn, 10, at) with
            {
                AmountMinor = 10_00,
                Details = new EarnDetails
                {
                    Components = [new(ComponentKind.Base, "base", 10)],
                    EarnDay = DateOnly.FromDateTime(at.UtcDateTime).DayNumber,
                    EarnMonth = (at.Year * 12) + at.Month - 1,
                },
            };
            state.Apply(earn, 8);
            state.AssertInvariants(earn);
        }

        EarnHistory history = state.Earnings;
        Assert.Equal(EarnHistory.CapDaysKept, history.EarnedByDay.Count);
        Assert.True(history.EarnedByMonth.Count <= EarnHistory.CapMonthsKept, $"{history.EarnedByMonth.Count} months kept");
        Assert.True(history.Qualification[^1].Day - history.Qualification[0].Day <= EarnHistory.QualifyingDaysSpanMax);
        Assert.Equal(400, history.PurchaseCount);
        // Oldest first, the newest day holding its purchase's points, an older one nothing.
        Assert.Equal(10, history.EarnedOnDay(DateOnly.FromDateTime(Start.AddDays(399).UtcDateTime).DayNumber));
        Assert.Equal(0, history.EarnedOnDay(DateOnly.FromDateTime(Start.AddDays(300).UtcDateTime).DayNumber));
        Assert.True(history.EarnedByDay.Zip(history.EarnedByDay.Skip(1)).All(p => p.First.Key < p.Second.Key));
        // The newest 30 days still count in full for a 30-day tier window.
        Assert.Equal((300L, 300_00L), history.QualifyingAt(Start.AddDays(399), 30));
    }

    [Fact]
    public void EarnHistory_EarnsInMoreCampaignsThanItKeeps_ForgetsTheLeastRecentlyEarned_AsReplayDoes()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        long sequence = 1;
        LedgerEntry Earn(params string[] campaigns)
        {
            sequence++;
            return Entry(sequence, LedgerEntryKind.Earn, 10 * campaigns.Length, Start.AddMinutes(sequence)) with
            {
                AmountMinor = 10_00,
                Details = new EarnDetails { Components = [.. campaigns.Select(c => new BreakdownComponent(ComponentKind.Campaign, c, 10))], EarnDay = 1, EarnMonth = 1 },
            };
        }

        void Apply(MemberState to, LedgerEntry earn)
        {
            to.Apply(earn, 8);
            to.AssertInvariants(earn);
        }

        // "c0", "c1" and "b1" are earned in first, by one entry; "c0" again halfway; then new
        // campaigns up to as many as are kept.
        Apply(state, Earn("c0", "c1", "b1"));
        for (int i = 2; i < EarnHistory.CampaignsKept - 1; i++)
        {
            Apply(state, Earn($"c{i}"));
            if (i == EarnHistory.CampaignsKept / 2)
            {
                Apply(state, Earn("c0"));
            }
        }

        Assert.Equal(EarnHistory.CampaignsKept, state.Earnings.Campaigns.Count);

        // One more, live and on the member read back from its snapshot (its dictionary laid out
        // anew): of the two least recently earned, by the same entry, the first by code ("b1") is
        // forgotten in both.
        MemberState restored = Snapshots.RoundTrip(state);
        LedgerEntry next = Earn("new1");
        Apply(state, next);
        Apply(restored, next);

        foreach (MemberState member in new[] { state, restored })
        {
            Assert.Equal(EarnHistory.CampaignsKept, member.Earnings.Campaigns.Count);
            Assert.Equal((20L, 0L, 10L, 10L), (member.Earnings.CampaignEarned("c0"), member.Earnings.CampaignEarned("b1"), member.Earnings.CampaignEarned("c1"), member.Earnings.CampaignEarned("new1")));
        }

        Assert.Equal(state.Earnings.Campaigns.OrderBy(c => c.Key, StringComparer.Ordinal), restored.Earnings.Campaigns.OrderBy(c => c.Key, StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(nameof(MemberOptions.SnapshotEveryEntries), 1, 1_000_000)]
    [InlineData(nameof(MemberOptions.SnapshotOnDeactivateMinEntries), 0, 1_000_000)]
    [InlineData(nameof(MemberOptions.RecentTransactionsMax), 1, MemberOptions.RecentTransactionsMaxLimit)]
    [InlineData(nameof(MemberOptions.StockClaimConfirmSeconds), MemberOptions.StockClaimConfirmSecondsMin, 604_800)]
    [InlineData(nameof(MemberOptions.ProgramCacheTtlMs), 0, 600_000)]
    public void MemberOptions_OutsideTheirRange_AreRefusedNamingTheSetting_AndTheirEdgesPass(string setting, int min, int max)
    {
        Assert.Null(new MemberOptions().Problem());
        System.Reflection.PropertyInfo property = typeof(MemberOptions).GetProperty(setting)!;
        foreach (int value in new[] { min, max })
        {
            var options = new MemberOptions();
            property.SetValue(options, value);
            Assert.Null(options.Problem());
        }

        foreach (int value in new[] { min - 1, max + 1 })
        {
            var options = new MemberOptions();
            property.SetValue(options, value);
            Assert.StartsWith($"Members:{setting} must be {min}..{max}", options.Problem(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void ReturnBook_LargePurchasesReturnedByLines_KeepsNoMoreLinesThanItsBound_TheLeastRecentlyUsedGoFirst()
    {
        // Ten purchases of 500 SKUs and 3 components each, each returned in full line by line.
        var book = new ReturnBook();
        for (int p = 0; p < 10; p++)
        {
            book.Record($"b{p}", BigReturn(500), sequence: p + 1, seed: new ReturnProgress(3, complete: true, touched: p + 1));
            book.AssertInvariants(p + 1);
            Assert.True(book.LinesKept <= ReturnBook.ReturnLinesKept, $"{book.LinesKept} lines kept after {p + 1} returns");
            Assert.Equal(book.Kept.Values.Sum(k => k.Lines), book.LinesKept);
        }

        // Four purchases of 503 lines fit in 2,048; the six used longest ago are forgotten.
        Assert.Equal(["b6", "b7", "b8", "b9"], book.Kept.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(4 * 503, book.LinesKept);
        Assert.Equal(500, book.Kept["b9"].SkuReturnedQuantity.Count);

        // b5, forgotten, was last used by entry 6: a ledger read of any purchase's returns made
        // before it may lack a return applied since (the book cannot tell whose); one made at
        // entry 6 or later cannot, unless its own purchase was used after the read.
        Assert.True(book.ChangedSince("b0", 5));
        Assert.True(book.ChangedSince("b5", 5));
        Assert.False(book.ChangedSince("b0", 6));
        Assert.False(book.ChangedSince("b5", 9));
        Assert.True(book.ChangedSince("b9", 9));
        Assert.False(book.ChangedSince("b9", 10));
    }

    [Fact]
    public void ReturnBook_OneProgressLargerThanTheBound_IsKeptAlone_AndFewerButSmallerAreNotForgotten()
    {
        var book = new ReturnBook();
        book.Record("small", BigReturn(10), sequence: 1, seed: new ReturnProgress(1, complete: true, touched: 1));
        Assert.False(book.ChangedSince("other", 0));

        book.Record("huge", BigReturn(ReturnBook.ReturnLinesKept + 1), sequence: 2, seed: new ReturnProgress(1, complete: true, touched: 2));
        book.AssertInvariants(2);

        Assert.Equal(["huge"], book.Kept.Keys);
        Assert.True(book.ChangedSince("small", 0));
        Assert.False(book.ChangedSince("small", 1));
    }

    [Fact]
    public void ReturnBook_ANewBook_HasForgottenNothing()
    {
        // A member read back from a snapshot has a new state, which a read against the old one
        // already counts as stale; its own book starts with nothing forgotten.
        var book = new ReturnBook();
        Assert.False(book.ChangedSince("b0", 0));
        Assert.Equal(0, book.LinesKept);
    }

    private static ReturnDetails BigReturn(int skus) => new()
    {
        Components = [new(ComponentKind.Base, "base", 1)],
        Lines = [.. Enumerable.Range(0, skus).Select(i => new SkuAmount($"sku-{i:D4}-with-a-long-code", 1_00, 10_000, Quantity: 1))],
        ReturnedAmountMinor = checked(skus * 1_00L),
    };

    [Fact]
    public void CapBuckets_KeepTheirOrder_DropOnlyBeyondTheirBound_AndAReturnNeverCreatesOne()
    {
        CapBucket[]? buckets = null;
        int spare = 0;
        foreach (int key in new[] { 10, 3, 7, 3 })
        {
            CapBucket.Add(ref buckets, ref spare, key, 5, kept: 3, createMissing: true);
        }

        Assert.Equal([(3, 10L), (7, 5L), (10, 5L)], CapBucket.Used(buckets, spare).Select(b => (b.Key, b.Points)));
        CapBucket[] before = buckets!;
        CapBucket.Add(ref buckets, ref spare, 4, -5, kept: 3, createMissing: false);
        Assert.Same(before, buckets);
        Assert.Equal(3, CapBucket.Count(buckets, spare));

        CapBucket.Add(ref buckets, ref spare, 20, 1, kept: 3, createMissing: true);
        Assert.Equal([(20, 1L)], CapBucket.Used(buckets, spare).Select(b => (b.Key, b.Points)));
        Assert.Equal(0, CapBucket.Find(buckets, spare, 3));
        Assert.Equal(1, CapBucket.Find(buckets, spare, 20));

        CapBucket[]? none = null;
        int noSpare = 0;
        CapBucket.Add(ref none, ref noSpare, 4, -5, kept: 3, createMissing: false);
        Assert.Null(none);
        Assert.Equal(0, CapBucket.Find(none, noSpare, 4));
    }

    [Fact]
    public void CapBuckets_ANewPeriodTakesAFreeSlot_AndTheArrayGrowsByDoublingUpToItsBound()
    {
        CapBucket[]? buckets = null;
        int spare = 0;
        var arrays = new HashSet<CapBucket[]>(ReferenceEqualityComparer.Instance);
        for (int key = 1; key <= 200; key++)
        {
            CapBucket.Add(ref buckets, ref spare, key, key, kept: 62, createMissing: true);
            arrays.Add(buckets!);
            Assert.Equal(Enumerable.Range(Math.Max(1, key - 61), Math.Min(key, 62)), CapBucket.Used(buckets, spare).Select(b => b.Key));
        }

        // 1, 2, 4, 8, 16, 32, 63 slots: seven arrays for 200 periods, then none however many more come.
        Assert.Equal(7, arrays.Count);
        Assert.Equal(63, buckets!.Length);
        Assert.Equal(1, spare);
        Assert.Equal(200, CapBucket.Find(buckets, spare, 200));
        Assert.Equal(139, CapBucket.Find(buckets, spare, 139));
        Assert.Equal(0, CapBucket.Find(buckets, spare, 138));
    }

    [Fact]
    public void EarnHistory_ANewDayOfAPreparedMember_AllocatesNothing()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        state.Prepare(8);
        EarnHistory history = state.Earnings;
        int day = DateOnly.FromDateTime(Start.UtcDateTime).DayNumber;
        history.CountEarn(day, 1, 10, [], 2);
        history.CountEarn(day + 1, 1, 10, [], 3);
        history.CountEarn(day + 2, 1, 10, [], 4);

        long before = GC.GetAllocatedBytesForCurrentThread();
        history.CountEarn(day + 3, 1, 10, [], 5);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // Four days fit in the array made when the third arrived (two slots, then four).
        Assert.Equal(0, allocated);
        Assert.Equal([10L, 10L, 10L, 10L], history.EarnedByDay.Select(b => b.Points));
        Assert.Equal(40, history.EarnedInMonth(1));
    }

    [Fact]
    public void LotBook_OneLotPerExpiry_SpentSoonestFirst_AndWarnedInPlace()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        DateTimeOffset soon = Start.AddDays(30), late = Start.AddDays(300);
        state.Apply(Adjust(2, 40, late), 8);
        state.Apply(Adjust(3, 25, soon), 8);
        state.Apply(Adjust(4, 5, soon), 8);
        state.Apply(Entry(5, LedgerEntryKind.ExpiryWarning, 0, Start) with { Details = new ExpiryWarningDetails { Lots = [new LotUse("t3", 30, soon)] } }, 8);

        Assert.Equal([(30L, soon, true), (40L, late, false)], state.Lots.Spendable.Select(l => (l.Points.Value, l.ExpiresAt!.Value, l.Warned)));
        List<LotUse> plan = state.Lots.PlanDebit(35);
        Assert.Equal([(30L, (DateTimeOffset?)soon), (5L, late)], plan.Select(u => (u.Points, u.ExpiresAt)));

        LedgerEntry spend = Entry(6, LedgerEntryKind.Adjust, -35, Start) with { Details = new AdjustDetails { Lots = plan } };
        state.Apply(spend, 8);
        state.AssertInvariants(spend);
        Assert.Equal([(35L, (DateTimeOffset?)late)], state.Lots.Spendable.Select(l => (l.Points.Value, l.ExpiresAt)));
        Assert.Equal(Snapshots.Describe(state), Snapshots.Describe(Snapshots.RoundTrip(state)));
    }

    [Fact]
    public void Prepare_ChangesNoValue_AndReplayingThePreparedStateGivesTheSameState()
    {
        var live = new MemberState();
        var replayed = new MemberState();
        LedgerEntry enrol = Entry(1, LedgerEntryKind.Enrol, 0, Start);
        live.Apply(enrol, 8);
        replayed.Apply(enrol, 8);
        string before = Snapshots.Describe(live);

        live.Prepare(8);
        live.Prepare(8);

        Assert.Equal(before, Snapshots.Describe(live));
        for (int i = 2; i <= 12; i++)
        {
            LedgerEntry earn = DayEarn(i, Start.AddDays(i));
            live.Apply(earn, 8);
            live.Prepare(8);
            replayed.Apply(earn, 8);
            live.AssertInvariants(earn);
        }

        Assert.Equal(Snapshots.Describe(replayed), Snapshots.Describe(live));
        Assert.Equal(Snapshots.Describe(live), Snapshots.Describe(Snapshots.RoundTrip(live)));
        Assert.Equal(8, live.RecentCount);
    }

    [Fact]
    public void FirstPurchase_OfAPreparedMember_AllocatesNothing()
    {
        const int RecentMax = 64;
        LedgerEntry enrol = Entry(1, LedgerEntryKind.Enrol, 0, Start);
        LedgerEntry earn = DayEarn(2, Start);
        var prepared = new MemberState();
        prepared.Apply(enrol, RecentMax);
        prepared.Prepare(RecentMax);
        var bare = new MemberState();
        bare.Apply(enrol, RecentMax);
        // Warm up the code paths (and their static caches) on a third member.
        var warm = new MemberState();
        warm.Apply(enrol, RecentMax);
        warm.Apply(earn, RecentMax);

        long bareBytes = AllocatedBy(() => bare.Apply(earn, RecentMax));
        long preparedBytes = AllocatedBy(() => prepared.Apply(earn, RecentMax));

        Assert.Equal(Snapshots.Describe(bare), Snapshots.Describe(prepared));
        // The lot list and the qualifying-day list (room for two of each) are made by Prepare.
        Assert.True(bareBytes - preparedBytes >= 300, $"first purchase allocated {preparedBytes} bytes prepared, {bareBytes} bare");
        // The cap day and month arrays are made by Prepare too: nothing is left.
        Assert.True(preparedBytes == 0, $"first purchase of a prepared member allocated {preparedBytes} bytes");
    }

    private static long AllocatedBy(Action action)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        action();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    private static LedgerEntry DayEarn(long sequence, DateTimeOffset at) =>
        Entry(sequence, LedgerEntryKind.Earn, 10, at) with
        {
            AmountMinor = 10_00,
            Details = new EarnDetails
            {
                Components = [new(ComponentKind.Base, "base", 10)],
                EarnDay = DateOnly.FromDateTime(at.UtcDateTime).DayNumber,
                EarnMonth = (at.Year * 12) + at.Month - 1,
                ExpiresAt = at.AddDays(365),
            },
        };

    [Fact]
    public void ReferralSide_CountsLinksForTheCap_WhateverTheOrderOfTheirTimes()
    {
        // A duplicate's referral merged in keeps its time, which its silo's clock may have put
        // after a later link's here: the times are then out of order.
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        state.Apply(Entry(2, LedgerEntryKind.ReferralLink, 0, Start.AddHours(2)) with { Reference = "a" }, 8);
        state.Apply(Entry(3, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "b" }, 8);

        // Before: counted from the newest back, stopping at b's time (outside the window): 0.
        Assert.Equal(1, state.Referral.MadeSince(Start.AddDays(7).AddHours(1), 7));
        Assert.Equal(2, state.Referral.MadeSince(Start.AddDays(1), 7));
    }

    [Fact]
    public void ReferralSide_TheSameLinkTwice_IsKeptOnce_AndARepointRenamesIt()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        state.Apply(Entry(2, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "a" }, 8);
        state.Apply(Entry(3, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "a" }, 8);
        state.Apply(Entry(4, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "b" }, 8);
        LedgerEntry repoint = Entry(5, LedgerEntryKind.Repointed, 0, Start) with { Reference = "c", Details = new RepointedDetails { ReplacedMember = "a" } };
        state.Apply(repoint, 8);
        state.AssertInvariants(repoint);

        Assert.Equal(["c", "b"], state.Referral.Referrals);
        Assert.Equal(2, state.Referral.ReferredAt.Count);
        Assert.Equal(2, state.Referral.MadeSince(Start.AddDays(1), 7));
    }

    [Fact]
    public void ReferralSide_ARepointToAMemberItReferredToo_KeepsThatLinkOnce()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        state.Apply(Entry(2, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "s" }, 8);
        state.Apply(Entry(3, LedgerEntryKind.ReferralLink, 0, Start.AddHours(1)) with { Reference = "d" }, 8);
        state.Apply(Entry(4, LedgerEntryKind.ReferralLink, 0, Start.AddHours(2)) with { Reference = "b" }, 8);
        // d, which this member referred, is merged into s, which it referred as well.
        LedgerEntry repoint = Entry(5, LedgerEntryKind.Repointed, 0, Start) with { Reference = "s", Details = new RepointedDetails { ReplacedMember = "d" } };
        state.Apply(repoint, 8);
        state.AssertInvariants(repoint);

        Assert.Equal(["s", "b"], state.Referral.Referrals);
        Assert.Equal([Start, Start.AddHours(2)], state.Referral.ReferredAt);
        Assert.Equal(2, state.Referral.MadeSince(Start.AddDays(1), 7));

        // Referred d before s: s takes d's (earlier) place.
        var other = new MemberState();
        other.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        other.Apply(Entry(2, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "d" }, 8);
        other.Apply(Entry(3, LedgerEntryKind.ReferralLink, 0, Start.AddHours(1)) with { Reference = "s" }, 8);
        other.Apply(repoint with { Sequence = 4 }, 8);
        Assert.Equal(["s"], other.Referral.Referrals);
        Assert.Equal([Start], other.Referral.ReferredAt);
    }

    [Fact]
    public void ReferralSide_ARepeatAnOlderVersionLeft_IsDroppedWhenTheMemberIsPrepared()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, Start), 8);
        state.Apply(Entry(2, LedgerEntryKind.ReferralLink, 0, Start) with { Reference = "s" }, 8);
        state.Apply(Entry(3, LedgerEntryKind.ReferralLink, 0, Start.AddHours(1)) with { Reference = "d" }, 8);
        // As the older Repoint left it: d's link renamed in place, s listed twice.
        typeof(ReferralSide).GetField("_referrals", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .SetValue(state.Referral, new List<string> { "s", "s" });

        state.Prepare(8);

        Assert.Equal(["s"], state.Referral.Referrals);
        Assert.Equal([Start], state.Referral.ReferredAt);
    }

    private static LedgerEntry Adjust(long sequence, long points, DateTimeOffset expiresAt) =>
        Entry(sequence, LedgerEntryKind.Adjust, points, Start) with { Details = new AdjustDetails { ExpiresAt = expiresAt } };

    private static EntryDetails? DetailsFor(LedgerEntryKind kind) => kind switch
    {
        LedgerEntryKind.Reserve => new ReserveDetails { HeldPoints = 0, LapsesAt = Start },
        LedgerEntryKind.Birthday => new BirthdayDetails { Birthday = new BirthdayGrant(2026, null, Start) },
        LedgerEntryKind.BonusDayBooked => new BonusDayBookedDetails { BonusDay = 1 },
        LedgerEntryKind.MergedIn => new MergedInDetails
        {
            Merge = new MergeTransfer("d", 0, [], [], "standard", null, null, [], 0, 0, 0, 0, [], 0),
        },
        _ => EntryDetails.For(kind) is { } type ? (EntryDetails)Activator.CreateInstance(type)! : null,
    };

    private static LedgerEntry Entry(long sequence, LedgerEntryKind kind, long points, DateTimeOffset at) =>
        new("p", "m", sequence, kind, new Points(points), "t" + sequence, 0, null, 0, "USD", null, "ref", at, at, 1, null, null);
}
