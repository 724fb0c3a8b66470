using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace Loyalty.Tests.Domain;

/// <summary>Pure rules: money, points, ids, validation, fingerprints and state replay.</summary>
public sealed class DomainRulesTests
{
    private readonly FakeTimeProvider _clock = new(Entries.Now);

    [Theory]
    [InlineData(12_99, 1, 2, 12)]
    [InlineData(12_99, 2, 2, 25)]
    [InlineData(1, 1, 2, 0)]
    [InlineData(500, 3, 0, 1500)]
    [InlineData(1_000, 1, 3, 1)]
    public void TimesRateRoundedDown_RoundsTheProductDownOnce(long amountMinor, long rate, int exponent, long expected) =>
        Assert.Equal(expected, new Money(amountMinor, "USD").TimesRateRoundedDown(rate, exponent));

    [Fact]
    public void TimesRateRoundedDown_Overflow_Throws() =>
        Assert.Throws<OverflowException>(() => new Money(long.MaxValue / 2, "USD").TimesRateRoundedDown(10, 2));

    [Fact]
    public void Points_AdditionOverflow_Throws() =>
        Assert.Throws<OverflowException>(() => new Points(long.MaxValue) + new Points(1));

    [Theory]
    [InlineData("m-1.a_b:c", null)]
    [InlineData("", "member_id is required")]
    [InlineData("a/b", "member_id may contain only letters, digits and . _ : -")]
    [InlineData("a b", "member_id may contain only letters, digits and . _ : -")]
    public void IdCheck_NamesTheField(string id, string? expected) =>
        Assert.Equal(expected, LoyaltyIds.Check(id, "member_id"));

    [Fact]
    public void IdCheck_TooLong_IsRefused() =>
        Assert.Equal("member_id is longer than 64 characters", LoyaltyIds.Check(new string('a', 65), "member_id"));

    [Fact]
    public void MemberKey_SplitsBackIntoItsParts() =>
        Assert.Equal(("prog", "mem"), LoyaltyIds.SplitMemberKey(LoyaltyIds.MemberKey("prog", "mem")));

    [Fact]
    public void PurchaseCheck_WithinClockSkew_IsAccepted_BeyondIsRefused()
    {
        Purchase near = Entries.Purchase("p", "m", "t", 1_00, _clock.GetUtcNow().AddMinutes(10));
        Purchase far = Entries.Purchase("p", "m", "t", 1_00, _clock.GetUtcNow().AddMinutes(20));

        Assert.Null(near.Check(_clock.GetUtcNow()));
        Assert.Equal("occurred_at is in the future", far.Check(_clock.GetUtcNow()));
    }

    [Theory]
    [InlineData(0, "amount_minor must be 1..100000000000")]
    [InlineData(-5, "amount_minor must be 1..100000000000")]
    [InlineData(100_000_000_001, "amount_minor must be 1..100000000000")]
    public void PurchaseCheck_AbsurdAmounts_AreRefused(long amount, string expected) =>
        Assert.Equal(expected, Entries.Purchase("p", "m", "t", amount, Entries.Now).Check(Entries.Now));

    [Fact]
    public void ExpiryPolicyFollowing_AnInactivityRuleAddedOrShortened_ExpiresNothingBeforeItsWarningDays_AndAnAnnouncedFloorNeverComesSooner()
    {
        DateTimeOffset t = Entries.Now;
        var none = new ExpiryPolicy(ExpiryMode.None, 0);
        var sixMonths = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6, WarnDays: 30);

        ExpiryPolicy added = sixMonths.Following(none, t);
        ExpiryPolicy fewerWarnDays = (sixMonths with { WarnDays = 7 }).Following(added, t.AddDays(10));
        ExpiryPolicy longer = (sixMonths with { InactivityMonths = 12 }).Following(added, t.AddDays(10));
        ExpiryPolicy shorter = (sixMonths with { InactivityMonths = 3 }).Following(added, t.AddDays(10));
        ExpiryPolicy shorterSoon = (sixMonths with { InactivityMonths = 3, WarnDays = 7 }).Following(added, t.AddDays(1));
        ExpiryPolicy removed = none.Following(added, t.AddDays(10));

        Assert.Equal(t.AddDays(30), added.InactivityNotBefore);
        Assert.Equal(t.AddDays(30), fewerWarnDays.InactivityNotBefore);
        Assert.Equal(t.AddDays(30), longer.InactivityNotBefore);
        Assert.Equal(t.AddDays(40), shorter.InactivityNotBefore);
        Assert.Equal(t.AddDays(30), shorterSoon.InactivityNotBefore);
        Assert.Null(removed.InactivityNotBefore);
    }

    [Theory]
    [InlineData(0, null)]
    [InlineData(-1, "lines[1].amount_minor must be 0..100000000000")]
    [InlineData(100_000_000_001, "lines[1].amount_minor must be 0..100000000000")]
    public void ReturnCheck_ALineWithoutMoney_IsAUnitGivenBack_ButNegativeOrAbsurdMoneyIsRefused(long amount, string? expected)
    {
        var request = new PurchaseReturn("r", "p", "m", "t", "s", new Money(0, "USD"), Entries.Now, [new ReturnLine("mug", 1, 5_00), new ReturnLine("gift", 1, amount)]);

        Assert.Equal(expected, request.Check(Entries.Now));
    }

    [Fact]
    public void PurchaseCheck_LinesAddingUpToMoreThanTheTotal_AreRefused()
    {
        Purchase purchase = Entries.Purchase("p", "m", "t", 1_00, Entries.Now) with
        {
            LineItems = [new LineItem("a", "", 1, 60), new LineItem("b", "", 1, 60)],
        };

        Assert.Equal("line_items add up to more than amount_minor", purchase.Check(Entries.Now));
    }

    [Fact]
    public void PurchaseCheck_UnknownChannelOrMalformedTender_IsRefusedNamingTheField()
    {
        Purchase purchase = Entries.Purchase("p", "m", "t", 1_00, Entries.Now);

        Assert.Equal("channel is not a known sales channel", (purchase with { Channel = (SalesChannel)9 }).Check(Entries.Now));
        Assert.Equal("tender may contain only letters, digits and . _ : -", (purchase with { Tender = "store card" }).Check(Entries.Now));
        Assert.Null((purchase with { Channel = SalesChannel.App, Tender = "storecard" }).Check(Entries.Now));
    }

    [Fact]
    public void PurchaseCheck_MalformedSkuOrCategory_NamesTheLine()
    {
        Purchase purchase = Entries.Purchase("p", "m", "t", 1_00, Entries.Now);

        Assert.Equal("line_items[1].sku may contain only letters, digits and . _ : -",
            (purchase with { LineItems = [new LineItem("a", "", 1, 10), new LineItem("b/c", "", 1, 10)] }).Check(Entries.Now));
        Assert.Equal("line_items[0].category may contain only letters, digits and . _ : -",
            (purchase with { LineItems = [new LineItem("a", "wine & beer", 1, 10)] }).Check(Entries.Now));
    }

    [Fact]
    public void PurchaseCheck_BadLine_NamesItsIndex()
    {
        Purchase purchase = Entries.Purchase("p", "m", "t", 1_00, Entries.Now) with
        {
            LineItems = [new LineItem("a", "", 1, 10), new LineItem("b", "", 0, 10)],
        };

        Assert.Equal("line_items[1].quantity must be 1..100000", purchase.Check(Entries.Now));
    }

    [Theory]
    [InlineData("", "USD", 2, 1, "name")]
    [InlineData("Shop", "US", 2, 1, "currency")]
    [InlineData("Shop", "USD", 5, 1, "currency_exponent")]
    [InlineData("Shop", "USD", 2, -1, "earn_points_per_unit")]
    [InlineData("Shop", "USD", 2, Limits.EarnPointsPerUnitMax + 1, "earn_points_per_unit")]
    public void ProgramSettings_OutOfRange_AreRefusedNamingTheField(string name, string currency, int exponent, long rate, string field)
    {
        string? error = new ProgramSettings(name, currency, exponent, rate).Check();

        Assert.StartsWith(field, error);
    }

    [Fact]
    public void ProgramSettings_Valid_PassTheCheck() =>
        Assert.Null(new ProgramSettings("Shop", "USD", 2, Limits.EarnPointsPerUnitMax).Check());

    [Fact]
    public void Fingerprint_SameContent_IsEqual_AnyChangedField_Differs()
    {
        Purchase a = Entries.Purchase("p", "m", "t", 1_00, Entries.Now);

        Assert.Equal(a.ComputeFingerprint(), (a with { }).ComputeFingerprint());
        Assert.NotEqual(a.ComputeFingerprint(), (a with { Amount = new Money(1_01, "USD") }).ComputeFingerprint());
        Assert.NotEqual(a.ComputeFingerprint(), (a with { StoreId = "store-2" }).ComputeFingerprint());
        Assert.NotEqual(a.ComputeFingerprint(), (a with { OccurredAt = Entries.Now.AddTicks(1) }).ComputeFingerprint());
        Assert.NotEqual(a.ComputeFingerprint(), (a with { LineItems = [new LineItem("x", "", 1, 1)] }).ComputeFingerprint());
    }

    [Fact]
    public void MemberState_ReplayInPieces_EqualsReplayAtOnce()
    {
        LedgerEntry[] entries =
        [
            new("p", "m", 1, LedgerEntryKind.Enrol, Points.Zero, null, 0, null, 0, null, null, "ref", Entries.Now, Entries.Now),
            Entries.Earn("p", "m", 2, 10),
            new("p", "m", 3, LedgerEntryKind.ReferralLink, Points.Zero, null, 0, null, 0, null, null, "friend", Entries.Now, Entries.Now),
            Entries.Earn("p", "m", 4, 5),
        ];
        var whole = new MemberState();
        foreach (LedgerEntry e in entries)
        {
            whole.Apply(e, recentMax: 1);
        }

        var head = new MemberState();
        head.Apply(entries[0], 1);
        head.Apply(entries[1], 1);
        MemberState resumed = Snapshots.RoundTrip(head);
        resumed.Apply(entries[2], 1);
        resumed.Apply(entries[3], 1);

        Assert.Equal(Snapshots.Describe(whole), Snapshots.Describe(resumed));
        Assert.Equal(["friend"], resumed.Referral.Referrals);
        Assert.Equal(new Points(15), resumed.Balance);
        Assert.Equal(1, resumed.RecentCount);
        Assert.NotNull(resumed.FindRecent("m-t4"));
    }

    [Fact]
    public void MemberState_EntryOutOfOrder_Throws()
    {
        var state = new MemberState();
        state.Apply(Entries.Earn("p", "m", 2, 1), 4);

        Assert.Throws<InvalidOperationException>(() => state.Apply(Entries.Earn("p", "m", 2, 1), 4));
    }
}
