using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Domain;

/// <summary>
/// What most members never have (a referral, a return, flags, merges, giving, birthdays, a
/// wallet…) costs them no object: they read shared empty ones, which cannot change, and a
/// member makes its own at its first such change, snapshots included.
/// </summary>
public sealed class MemberStateSharingTests
{
    private static LedgerEntry Entry(long sequence, LedgerEntryKind kind, string? reference = null, EntryDetails? details = null) =>
        new("p", "m", sequence, kind, Points.Zero, null, 0, null, 0, null, null, reference, Entries.Now, Entries.Now, Details: details);

    [Fact]
    public void AMemberThatOnlyEarns_HoldsNoSideBookOrOccasionalState()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol), 4);
        state.Apply(Entries.Earn("p", "m", 2, 10), 4);
        // Setting a value to its default makes nothing either.
        state.Apply(Entry(3, LedgerEntryKind.Flags, details: new FlagsDetails { Flags = [] }), 4);

        Assert.Same(ReferralSide.None, state.Referral);
        Assert.Same(ReturnBook.None, state.Returns);
        Assert.False(state.HasOccasional);
        MemberState read = Snapshots.RoundTrip(state);
        Assert.Same(ReferralSide.None, read.Referral);
        Assert.Same(ReturnBook.None, read.Returns);
        Assert.False(read.HasOccasional);
        Assert.Equal(Snapshots.Describe(state), Snapshots.Describe(read));
    }

    [Fact]
    public void TheFirstChange_MakesTheMembersOwn_AndLeavesTheSharedOnesEmpty()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, reference: "referrer"), 4);
        state.Apply(Entry(2, LedgerEntryKind.ReferralLink, reference: "friend"), 4);
        state.Apply(Entry(3, LedgerEntryKind.Flags, details: new FlagsDetails { Flags = ["storecard"] }), 4);

        Assert.NotSame(ReferralSide.None, state.Referral);
        Assert.Equal("referrer", state.Referral.ReferredBy);
        Assert.Equal(["friend"], state.Referral.Referrals);
        Assert.True(state.HasOccasional);
        Assert.Equal(["storecard"], state.Flags);
        Assert.Null(ReferralSide.None.ReferredBy);
        Assert.Empty(ReferralSide.None.Referrals);

        MemberState read = Snapshots.RoundTrip(state);
        Assert.Equal(Snapshots.Describe(state), Snapshots.Describe(read));
        Assert.Equal(["storecard"], read.Flags);
        Assert.Equal(["friend"], read.Referral.Referrals);
    }

    [Fact]
    public void TheSharedEmptyOnes_CannotChange()
    {
        Assert.Throws<InvalidOperationException>(() => ReferralSide.None.Link("friend", Entries.Now, unconfirmed: true));
        Assert.Throws<InvalidOperationException>(() => ReferralSide.None.Withdraw("friend"));
        Assert.Throws<InvalidOperationException>(() => ReferralSide.None.ReferredByMember("referrer"));
        Assert.Throws<InvalidOperationException>(() => ReferralSide.None.Reward("friend", 5));
        Assert.Throws<InvalidOperationException>(() => ReturnBook.None.Adopt([new ReturnedSoFar("t1", false, 100, new Dictionary<string, long>(), [], new Dictionary<string, long>())], 1));

        Assert.Empty(ReferralSide.None.Referrals);
        Assert.Empty(ReferralSide.None.Rewards);
        Assert.Empty(ReturnBook.None.Kept);
    }
}
