namespace Loyalty.Grains;

/// <summary>
/// The part of a member's state that few members ever have: erasure, merges, flags, giving,
/// birthdays, a paid membership, the store-credit wallet, open trade-ins, a shortfall left by
/// returns, an inactivity warning and the last grant into an empty balance. <see cref="MemberState"/> makes it at the first such change
/// and reads defaults while there is none; the meaning of each field is on the member's property
/// of the same name. Changed only through <see cref="MemberState.Apply"/>.
/// </summary>
[GenerateSerializer]
internal sealed class OccasionalState
{
    [Id(0)] public List<string>? Flags { get; set; }

    [Id(1)] public Points Shortfall { get; set; }

    [Id(2)] public DateTimeOffset? InactivityWarnedFor { get; set; }

    [Id(3)] public bool Erased { get; set; }

    [Id(4)] public string? MergedInto { get; set; }

    [Id(5)] public MergeTransfer? Detached { get; set; }

    [Id(6)] public List<string>? MergedFrom { get; set; }

    [Id(7)] public bool HasProfile { get; set; }

    [Id(8)] public BookedBonusDays? BonusDays { get; set; }

    [Id(9)] public string? Cause { get; set; }

    [Id(10)] public long GivenMinor { get; set; }

    [Id(11)] public int BirthMonth { get; set; }

    [Id(12)] public int BirthdayYear { get; set; }

    [Id(13)] public BirthdayGrant? BirthdayGrant { get; set; }

    [Id(14)] public bool BirthdayGiftUsed { get; set; }

    [Id(15)] public MembershipState? Membership { get; set; }

    [Id(16)] public long WalletMinor { get; set; }

    [Id(17)] public List<OpenTradeIn>? TradeIns { get; set; }

    [Id(18)] public DateTimeOffset? GrantedIntoEmptyAt { get; set; }

    [Id(19)] public string? MergingFrom { get; set; }

    [Id(20)] public DateTimeOffset MergingSince { get; set; }

    [Id(21)] public string? MergingReason { get; set; }

    [Id(22)] public List<string>? QualifyingFrom { get; set; }
}
