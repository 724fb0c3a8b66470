namespace Loyalty;

/// <summary>What one part of an earn (or of its reversal) is for.</summary>
public enum ComponentKind
{
    /// <summary>Lines (or the total) without a product rule, at the base rate.</summary>
    Base = 1,

    /// <summary>Lines under one SKU or category rule, at the base rate times the rule's multiplier.</summary>
    Product = 2,

    /// <summary>The member's tier multiplier, on the basket points.</summary>
    Tier = 3,

    /// <summary>A member flag or the purchase's tender, on the basket points.</summary>
    Flag = 4,

    /// <summary>A bonus campaign: its multiplier on the basket points plus its fixed bonus.</summary>
    Campaign = 5,

    /// <summary>The program's sign-up bonus.</summary>
    Signup = 6,

    /// <summary>The referral reward of the referred member's first qualifying purchase; code "referral:REFERRER". Reversed only by a full return.</summary>
    Referral = 7,

    /// <summary>A personal bonus day the member booked; code is the day (YYYY-MM-DD, program-local).</summary>
    BonusDay = 8,

    /// <summary>The member's paid membership plan multiplier; code is the plan.</summary>
    Membership = 9,
}

/// <summary>One part of an earn: which rule, and the whole points it gave (after rounding and caps).</summary>
[GenerateSerializer, Immutable]
public sealed record BreakdownComponent(
    [property: Id(0)] ComponentKind Kind,
    [property: Id(1)] string Code,
    [property: Id(2)] long Points);

/// <summary>
/// The money of one SKU on a purchase (or a return), with the product multiplier it earned at
/// and the basket component ("base" or a rule's code) its points are in, and how many units
/// (0 in entries recorded before quantities were kept: their returns are bounded by money only).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record SkuAmount(
    [property: Id(0)] string Sku,
    [property: Id(1)] long AmountMinor,
    [property: Id(2)] int MultiplierBp,
    [property: Id(3)] string Component = "base",
    [property: Id(4)] int Quantity = 0);

/// <summary>
/// The explanation stored with a ledger entry, and returned with its acknowledgement: one sealed
/// record per entry kind (<see cref="For"/> says which), with that kind's own facts. Replay reads
/// it instead of re-evaluating the rules, so a member's state never depends on the configuration
/// of today: earn entries carry their components, the tier decision and the calendar buckets they
/// count in; return entries carry what they reversed and from where. Kinds whose entry says all
/// (a link, an erasure, a chosen cause) have none. Facts several kinds share are read through
/// small interfaces (<see cref="ITierOutcome"/>, <see cref="ILotCredit"/>, <see cref="ILotsTaken"/>,
/// <see cref="IMoneyMoved"/>), never through a field that only some kinds fill.
/// </summary>
[GenerateSerializer, Immutable]
public abstract record EntryDetails
{
    private static readonly Type?[] Types = MapKinds();

    /// <summary>The details record of <paramref name="kind"/>; null for kinds without details. An undefined kind throws.</summary>
    public static Type? For(LedgerEntryKind kind) =>
        (int)kind is > 0 and var i && i < Types.Length && Enum.IsDefined(kind)
            ? Types[i]
            : throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a ledger entry kind.");

    /// <summary>Whether <paramref name="details"/> may be the details of an entry of <paramref name="kind"/>: its record, or none.</summary>
    public static bool Fits(LedgerEntryKind kind, EntryDetails? details) => details is null || details.GetType() == For(kind);

    /// <summary>
    /// The details as read back from storage, with the defaults a reader expects where the stored
    /// form leaves them out (empty lists, the tier before equal to the tier after).
    /// </summary>
    public virtual EntryDetails WithDefaults() => this;

    /// <summary>The sum of the first <paramref name="count"/> components; checked.</summary>
    public static long Total(IReadOnlyList<BreakdownComponent> components, int count)
    {
        long total = 0;
        for (int i = 0; i < count; i++)
        {
            total = checked(total + components[i].Points);
        }

        return total;
    }

    private static Type?[] MapKinds()
    {
        var types = new Type?[(int)LedgerEntryKind.MergeSettled + 1];
        types[(int)LedgerEntryKind.Enrol] = typeof(EnrolDetails);
        types[(int)LedgerEntryKind.Earn] = typeof(EarnDetails);
        types[(int)LedgerEntryKind.Return] = typeof(ReturnDetails);
        types[(int)LedgerEntryKind.Adjust] = typeof(AdjustDetails);
        types[(int)LedgerEntryKind.Flags] = typeof(FlagsDetails);
        types[(int)LedgerEntryKind.Redeem] = typeof(RedeemDetails);
        types[(int)LedgerEntryKind.Reserve] = typeof(ReserveDetails);
        types[(int)LedgerEntryKind.ReservationEnd] = typeof(ReservationEndDetails);
        types[(int)LedgerEntryKind.Expire] = typeof(ExpireDetails);
        types[(int)LedgerEntryKind.ExpiryWarning] = typeof(ExpiryWarningDetails);
        types[(int)LedgerEntryKind.ReferralReward] = typeof(ReferralRewardDetails);
        types[(int)LedgerEntryKind.Profile] = typeof(ProfileDetails);
        types[(int)LedgerEntryKind.MergedAway] = typeof(MergedAwayDetails);
        types[(int)LedgerEntryKind.MergedIn] = typeof(MergedInDetails);
        types[(int)LedgerEntryKind.Repointed] = typeof(RepointedDetails);
        types[(int)LedgerEntryKind.ReferralSettled] = typeof(ReferralSettledDetails);
        types[(int)LedgerEntryKind.Feedback] = typeof(FeedbackDetails);
        types[(int)LedgerEntryKind.BonusDayBooked] = typeof(BonusDayBookedDetails);
        types[(int)LedgerEntryKind.Birthday] = typeof(BirthdayDetails);
        types[(int)LedgerEntryKind.MembershipStarted] = typeof(MembershipStartedDetails);
        types[(int)LedgerEntryKind.MembershipRenewed] = typeof(MembershipRenewedDetails);
        types[(int)LedgerEntryKind.MembershipCancelled] = typeof(MembershipCancelledDetails);
        types[(int)LedgerEntryKind.MembershipLapsed] = typeof(MembershipLapsedDetails);
        types[(int)LedgerEntryKind.TradeInSubmitted] = typeof(TradeInSubmittedDetails);
        types[(int)LedgerEntryKind.TradeInAccepted] = typeof(TradeInAcceptedDetails);
        types[(int)LedgerEntryKind.TradeInRejected] = typeof(TradeInRejectedDetails);
        types[(int)LedgerEntryKind.TierReviewed] = typeof(TierReviewedDetails);
        types[(int)LedgerEntryKind.ReferralLink] = typeof(ReferralLinkDetails);
        types[(int)LedgerEntryKind.MergeSettled] = typeof(MergeSettledDetails);

        // Referred, Erase, CauseChosen, ReferralConfirmed, ReferralWithdrawn and MergeStarted say everything in the entry itself.
        return types;
    }
}

/// <summary>Details of entries that decide the member's tier: before, after, and when it is next reviewed.</summary>
public interface ITierOutcome
{
    /// <summary>The member's tier when the event arrived (after any review that was due).</summary>
    string? TierBefore { get; }

    /// <summary>The member's tier after the event.</summary>
    string? TierAfter { get; }

    /// <summary>When the tier after the event is next reviewed for a downgrade; null for the entry tier.</summary>
    DateTimeOffset? TierReviewAt { get; }

    /// <summary>The tier was lowered by a review before this event, from this tier; null when not.</summary>
    string? DowngradedFrom { get; }
}

/// <summary>Details of entries that credit points as a lot: when that lot expires.</summary>
public interface ILotCredit
{
    /// <summary>When the lot this entry creates expires; null when never.</summary>
    DateTimeOffset? ExpiresAt { get; }
}

/// <summary>Details of entries that take points from lots (or warn about them): exactly which, so replay never re-decides.</summary>
public interface ILotsTaken
{
    /// <summary>The lots spent, taken back, expired or warned about.</summary>
    IReadOnlyList<LotUse>? Lots { get; }
}

/// <summary>Details of entries that move money besides points: a share given to a cause, the store-credit wallet.</summary>
public interface IMoneyMoved
{
    /// <summary>The cause money goes to, or null.</summary>
    string? Cause { get; }

    /// <summary>The money (minor units) given to <see cref="Cause"/>; negative when taken back.</summary>
    long GivenMinor { get; }

    /// <summary>The store-credit wallet's change in minor units: credit (positive) or spent (negative).</summary>
    long WalletMinor { get; }
}

/// <summary>An enrolment: the sign-up bonus as a component, the entry tier, the bonus lot's expiry.</summary>
[GenerateSerializer, Immutable]
public sealed record EnrolDetails : EntryDetails, ILotCredit
{
    /// <summary>The sign-up bonus, when the program gives one.</summary>
    [Id(0)] public IReadOnlyList<BreakdownComponent> Components { get; init; } = [];

    /// <summary>The member's first tier.</summary>
    [Id(1)] public string? TierAfter { get; init; }

    /// <inheritdoc />
    [Id(2)] public DateTimeOffset? ExpiresAt { get; init; }

    /// <inheritdoc />
    public override EntryDetails WithDefaults() => this with { Components = Components ?? [] };
}

/// <summary>A purchase's earn: how its points are made up, the caps and tier it met, what it counts in.</summary>
[GenerateSerializer, Immutable]
public sealed record EarnDetails : EntryDetails, ITierOutcome, ILotCredit, IMoneyMoved
{
    /// <summary>The parts of the earn.</summary>
    [Id(0)] public IReadOnlyList<BreakdownComponent> Components { get; init; } = [];

    /// <summary>Caps that cut this earn: "daily", "monthly", "campaign:ID".</summary>
    [Id(1)] public IReadOnlyList<string> CapsHit { get; init; } = [];

    /// <summary>Points the caps removed.</summary>
    [Id(2)] public long CappedPoints { get; init; }

    /// <inheritdoc />
    [Id(3)] public string? TierBefore { get; init; }

    /// <inheritdoc />
    [Id(4)] public string? TierAfter { get; init; }

    /// <inheritdoc />
    [Id(5)] public DateTimeOffset? TierReviewAt { get; init; }

    /// <summary>The program-local calendar day (DateOnly.DayNumber) of the purchase, for the daily cap.</summary>
    [Id(6)] public int EarnDay { get; init; }

    /// <summary>The program-local month (year * 12 + month - 1) of the purchase, for the monthly cap.</summary>
    [Id(7)] public int EarnMonth { get; init; }

    /// <summary>The basket per SKU (for line-item returns).</summary>
    [Id(8)] public IReadOnlyList<SkuAmount>? Lines { get; init; }

    /// <inheritdoc />
    [Id(9)] public string? DowngradedFrom { get; init; }

    /// <inheritdoc />
    [Id(10)] public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>The reward redeemed with the purchase (its own redeem entry comes just before), and how many units.</summary>
    [Id(11)] public string? RewardId { get; init; }

    /// <inheritdoc cref="RewardId"/>
    [Id(12)] public int Quantity { get; init; }

    /// <summary>The referrer's reward this first qualifying purchase earns it (the referred member's is a component).</summary>
    [Id(13)] public long ReferrerReward { get; init; }

    /// <summary>The purchase's place among the member's purchases (<see cref="PurchaseActivity"/> flags), for reports.</summary>
    [Id(14)] public int Activity { get; init; }

    /// <inheritdoc />
    [Id(15)] public string? Cause { get; init; }

    /// <inheritdoc />
    [Id(16)] public long GivenMinor { get; init; }

    /// <inheritdoc />
    [Id(17)] public long WalletMinor { get; init; }

    /// <summary>The sum of the components.</summary>
    public long ComponentTotal() => Total(Components, Components.Count);

    /// <inheritdoc />
    public override EntryDetails WithDefaults() => this with { Components = Components ?? [], CapsHit = CapsHit ?? [], TierBefore = TierBefore ?? TierAfter };
}

/// <summary>A return: what it reversed (per original component, as positive numbers) and from where.</summary>
[GenerateSerializer, Immutable]
public sealed record ReturnDetails : EntryDetails, ILotsTaken, IMoneyMoved
{
    /// <summary>The part of each original component reversed, as positive numbers.</summary>
    [Id(0)] public IReadOnlyList<BreakdownComponent> Components { get; init; } = [];

    /// <summary>The SKUs returned.</summary>
    [Id(1)] public IReadOnlyList<SkuAmount>? Lines { get; init; }

    /// <summary>Points taken from the purchase's still-pending lot.</summary>
    [Id(2)] public long PendingReversed { get; init; }

    /// <summary>Points taken from the active balance.</summary>
    [Id(3)] public long ActiveReversed { get; init; }

    /// <summary>Points that should have been reversed but were not (balance floored at zero).</summary>
    [Id(4)] public long Shortfall { get; init; }

    /// <summary>Money returned, in minor units.</summary>
    [Id(5)] public long ReturnedAmountMinor { get; init; }

    /// <summary>When the original purchase was recorded (its qualification day).</summary>
    [Id(6)] public DateTimeOffset? OriginalRecordedAt { get; init; }

    /// <summary>The original purchase's day and month, whose cap periods the return gives back to.</summary>
    [Id(7)] public int EarnDay { get; init; }

    /// <inheritdoc cref="EarnDay"/>
    [Id(8)] public int EarnMonth { get; init; }

    /// <inheritdoc />
    [Id(9)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>It reversed the referral rewards (the qualifying purchase came back in full).</summary>
    [Id(10)] public bool ReferralReversed { get; init; }

    /// <summary>The points a full return of a purchase paid partly in points gives back, to the lots they came from.</summary>
    [Id(11)] public IReadOnlyList<LotUse>? Restored { get; init; }

    /// <summary>The purchase was made by a duplicate account since merged into this member.</summary>
    [Id(12)] public bool MergedPurchase { get; init; }

    /// <summary>When the purchase's pending lot, which the return took points from, was to become spendable.</summary>
    [Id(13)] public DateTimeOffset? PendingAvailableAt { get; init; }

    /// <inheritdoc />
    [Id(14)] public string? Cause { get; init; }

    /// <inheritdoc />
    [Id(15)] public long GivenMinor { get; init; }

    /// <inheritdoc />
    [Id(16)] public long WalletMinor { get; init; }

    /// <summary>
    /// It completed a full return of the purchase. A purchase paid partly in points then gives back
    /// its points (<see cref="Restored"/>, less those whose lot has expired since: they would have
    /// expired) and its reward's unit to the stock.
    /// </summary>
    [Id(17)] public bool Full { get; init; }

    /// <summary>
    /// A full return's points that are not given back because their lot has expired since the
    /// purchase spent them, per lot: no longer redeemed (the reward came back with the purchase)
    /// but expired, as they would have been. Null when none.
    /// </summary>
    [Id(18)] public IReadOnlyList<LotUse>? ExpiredUnrestored { get; init; }

    /// <summary>
    /// The pending lot <see cref="PendingReversed"/> came from, by its first purchase's
    /// transaction id (one day's purchases share a lot). Null when none came from pending, and in
    /// returns recorded before lots were shared: each purchase then had its own lot.
    /// </summary>
    [Id(19)] public string? PendingLot { get; init; }

    /// <summary>
    /// The purchase's money this return takes off the member's qualifying spend: what it returns,
    /// or, when it completes the purchase's return, all of the purchase's amount not returned
    /// before (lines need not add up to the purchase's amount: tax, or a line refunded for less
    /// than it cost). Null in returns recorded before it was kept, which took off
    /// <see cref="ReturnedAmountMinor"/>.
    /// </summary>
    [Id(20)] public long? SpendReturnedMinor { get; init; }

    /// <summary>
    /// The purchase is a merged duplicate's (<see cref="MergedPurchase"/>) whose qualifying history
    /// the merge brought in: the return takes its points and spend off the survivor's qualification
    /// as it would the survivor's own purchase's. False for merges recorded before that history was
    /// handed on (the survivor never counted those purchases).
    /// </summary>
    [Id(21)] public bool MergedQualifying { get; init; }

    /// <summary>
    /// A full return of a purchase whose basket took the member's birthday gift, while that year's
    /// gift is still the member's: the gift is open again (its unit went back to the stock).
    /// </summary>
    [Id(22)] public bool BirthdayGiftBack { get; init; }

    /// <summary>What the return takes off the qualifying spend (<see cref="SpendReturnedMinor"/>); derived, not stored.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public long SpendTakenMinor => SpendReturnedMinor ?? ReturnedAmountMinor;

    /// <inheritdoc />
    public override EntryDetails WithDefaults() => this with { Components = Components ?? [] };
}

/// <summary>A manual adjustment: the lot it credits (its expiry), or the lots it takes from.</summary>
[GenerateSerializer, Immutable]
public sealed record AdjustDetails : EntryDetails, ILotCredit, ILotsTaken
{
    /// <inheritdoc />
    [Id(0)] public DateTimeOffset? ExpiresAt { get; init; }

    /// <inheritdoc />
    [Id(1)] public IReadOnlyList<LotUse>? Lots { get; init; }
}

/// <summary>The member's flags from now on.</summary>
[GenerateSerializer, Immutable]
public sealed record FlagsDetails : EntryDetails
{
    /// <summary>The flags.</summary>
    [Id(0)] public IReadOnlyList<string>? Flags { get; init; }
}

/// <summary>A redemption: the reward, how many units, and the lots it spent.</summary>
[GenerateSerializer, Immutable]
public sealed record RedeemDetails : EntryDetails, ILotsTaken
{
    /// <summary>The reward.</summary>
    [Id(0)] public string? RewardId { get; init; }

    /// <summary>How many units.</summary>
    [Id(1)] public int Quantity { get; init; }

    /// <inheritdoc />
    [Id(2)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>One unit was the member's birthday gift, for no points.</summary>
    [Id(3)] public bool BirthdayGift { get; init; }

    /// <summary>A donation reward's cause; the money is the entry's amount.</summary>
    [Id(4)] public string? Cause { get; init; }

    /// <summary>A committed reservation: the points it had held.</summary>
    [Id(5)] public long HeldPoints { get; init; }

    /// <summary>The year of the birthday grant whose gift <see cref="BirthdayGift"/> was (0 without one, and in redemptions recorded before it was kept).</summary>
    [Id(6)] public int BirthdayGiftYear { get; init; }

    /// <summary>
    /// Whether the units were taken from the reward's stock (it had one when they were spent): a
    /// full return gives them back exactly when they were, whatever the catalogue says by then.
    /// Null in redemptions recorded before it was kept.
    /// </summary>
    [Id(7)] public bool? StockTaken { get; init; }
}

/// <summary>A reservation: the reward, how many units, the points held and when the hold lapses.</summary>
[GenerateSerializer, Immutable]
public sealed record ReserveDetails : EntryDetails
{
    /// <summary>The reward.</summary>
    [Id(0)] public string? RewardId { get; init; }

    /// <summary>How many units.</summary>
    [Id(1)] public int Quantity { get; init; }

    /// <summary>When the hold lapses if neither committed nor cancelled.</summary>
    [Id(2)] public DateTimeOffset? LapsesAt { get; init; }

    /// <summary>The points held.</summary>
    [Id(3)] public long HeldPoints { get; init; }

    /// <summary>
    /// A donation reward's cause; the money the units stand for is the entry's amount, which the
    /// commit records whatever the catalogue says by then.
    /// </summary>
    [Id(4)] public string? Cause { get; init; }
}

/// <summary>A reservation that ended without a redemption: cancelled or lapsed.</summary>
[GenerateSerializer, Immutable]
public sealed record ReservationEndDetails : EntryDetails
{
    /// <summary>The reward.</summary>
    [Id(0)] public string? RewardId { get; init; }

    /// <summary>How many units.</summary>
    [Id(1)] public int Quantity { get; init; }

    /// <summary>The points it had held.</summary>
    [Id(2)] public long HeldPoints { get; init; }

    /// <summary>The state it ended in.</summary>
    [Id(3)] public ReservationState EndedAs { get; init; }
}

/// <summary>Points expired: the lots, and the inactivity deadline when inactivity caused it.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpireDetails : EntryDetails, ILotsTaken
{
    /// <inheritdoc />
    [Id(0)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>Set when inactivity caused it.</summary>
    [Id(1)] public DateTimeOffset? InactivityDeadline { get; init; }
}

/// <summary>A warning that points will expire: the lots, and the inactivity deadline warned about.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpiryWarningDetails : EntryDetails, ILotsTaken
{
    /// <inheritdoc />
    [Id(0)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>The inactivity deadline warned about.</summary>
    [Id(1)] public DateTimeOffset? InactivityDeadline { get; init; }

    /// <summary>
    /// The points the inactivity deadline will take if the member does nothing before it (lots
    /// whose own expiry comes first are in <see cref="Lots"/> or warned of on their own); 0 without
    /// a deadline, and in warnings recorded before it was kept.
    /// </summary>
    [Id(2)] public long InactivityPoints { get; init; }
}

/// <summary>A referrer's reward (its lot's expiry), or its reversal (the lots taken back and what could not be).</summary>
[GenerateSerializer, Immutable]
public sealed record ReferralRewardDetails : EntryDetails, ILotCredit, ILotsTaken
{
    /// <inheritdoc />
    [Id(0)] public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>It reverses the reward (the qualifying purchase came back in full).</summary>
    [Id(1)] public bool ReferralReversed { get; init; }

    /// <inheritdoc />
    [Id(2)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>Points that should have been taken back but were not (balance floored at zero).</summary>
    [Id(3)] public long Shortfall { get; init; }
}

/// <summary>A profile change: the names of the fields the member now has (never their values).</summary>
[GenerateSerializer, Immutable]
public sealed record ProfileDetails : EntryDetails
{
    /// <summary>The field names.</summary>
    [Id(0)] public IReadOnlyList<string>? ProfileFields { get; init; }

    /// <summary>The birthday's month (1..12) when the profile has a birthday; 0 otherwise.</summary>
    [Id(1)] public int BirthMonth { get; init; }
}

/// <summary>The duplicate's side of a merge: everything that left it.</summary>
[GenerateSerializer, Immutable]
public sealed record MergedAwayDetails : EntryDetails
{
    /// <summary>What moved to the survivor.</summary>
    [Id(0)] public MergeTransfer? Merge { get; init; }

    /// <summary>
    /// The tier the member's entries last recorded, which reports count it in; the transfer's tier
    /// is the one it holds now, after a review that lowers a tier and is recorded only with the
    /// member's next entry (this one). Null in entries written before it was kept.
    /// </summary>
    [Id(1)] public string? TierRecorded { get; init; }
}

/// <summary>The survivor's side of a merge: what arrived, and the tier kept.</summary>
[GenerateSerializer, Immutable]
public sealed record MergedInDetails : EntryDetails, ITierOutcome
{
    /// <summary>What moved from the merged-away member.</summary>
    [Id(0)] public MergeTransfer? Merge { get; init; }

    /// <inheritdoc />
    [Id(1)] public string? TierBefore { get; init; }

    /// <inheritdoc />
    [Id(2)] public string? TierAfter { get; init; }

    /// <inheritdoc />
    [Id(3)] public DateTimeOffset? TierReviewAt { get; init; }

    /// <summary>The survivor had no referrer and takes the duplicate's, with its referral status.</summary>
    [Id(4)] public bool InheritsReferrer { get; init; }

    /// <summary>
    /// The survivor had made purchases before it took the referrer over: the referral it takes
    /// earns nobody a reward, as a referral set after a member's first purchase would not
    /// (merging a new, referred account into an old customer's must not open one).
    /// </summary>
    [Id(5)] public bool InheritedAfterPurchases { get; init; }

    /// <summary>
    /// The survivor's tier as its entries last recorded it, when a review due by the merge lowered
    /// it (the merge is the entry that records that review); null otherwise. The merge itself then
    /// keeps the higher of the two members' tiers.
    /// </summary>
    [Id(6)] public string? DowngradedFrom { get; init; }

    /// <inheritdoc />
    public override EntryDetails WithDefaults() => this with { TierBefore = TierBefore ?? TierAfter };
}

/// <summary>A tier review that fell due: the tier before and after it (the same when it kept the tier), and the next review.</summary>
[GenerateSerializer, Immutable]
public sealed record TierReviewedDetails : EntryDetails, ITierOutcome
{
    /// <inheritdoc />
    [Id(0)] public string? TierBefore { get; init; }

    /// <inheritdoc />
    [Id(1)] public string? TierAfter { get; init; }

    /// <inheritdoc />
    [Id(2)] public DateTimeOffset? TierReviewAt { get; init; }

    /// <summary>None: the entry is itself the review's downgrade (<see cref="TierBefore"/> to <see cref="TierAfter"/>), if it lowered the tier.</summary>
    public string? DowngradedFrom => null;

    /// <inheritdoc />
    public override EntryDetails WithDefaults() => this with { TierBefore = TierBefore ?? TierAfter };
}

/// <summary>The referrer's side of a referral link (the entry's reference is the referred member).</summary>
[GenerateSerializer, Immutable]
public sealed record ReferralLinkDetails : EntryDetails
{
    /// <summary>
    /// The link waits for the referred member's side: a <see cref="LedgerEntryKind.ReferralConfirmed"/>
    /// or <see cref="LedgerEntryKind.ReferralWithdrawn"/> entry settles it. Links recorded before
    /// this existed have no details, and stand.
    /// </summary>
    [Id(0)] public bool Unconfirmed { get; init; }
}

/// <summary>The end of a merge into this member (the entry's reference is the duplicate).</summary>
[GenerateSerializer, Immutable]
public sealed record MergeSettledDetails : EntryDetails
{
    /// <summary>
    /// The duplicate refused to let go (erased, merged elsewhere, business of its own, no room
    /// here): nothing moved, and the entry's reason says why. False when it was taken in.
    /// </summary>
    [Id(0)] public bool Abandoned { get; init; }
}

/// <summary>A referral link repointed from a merged-away member (the entry's reference is the survivor).</summary>
[GenerateSerializer, Immutable]
public sealed record RepointedDetails : EntryDetails
{
    /// <summary>The member id that was replaced.</summary>
    [Id(0)] public string? ReplacedMember { get; init; }
}

/// <summary>The referred member's note that its referrer was told of the reward and/or its reversal, or refused it.</summary>
[GenerateSerializer, Immutable]
public sealed record ReferralSettledDetails : EntryDetails
{
    /// <summary>The reward the referrer was told of; 0 when none.</summary>
    [Id(0)] public long ReferrerReward { get; init; }

    /// <summary>The referrer was told of the reversal.</summary>
    [Id(1)] public bool ReferralReversed { get; init; }

    /// <summary>
    /// The referrer refused the reward for good (it cannot take it: erased, or at the engine's
    /// volume limit); nothing is owed to it any more and nothing is to be reversed. The entry's
    /// reason says why.
    /// </summary>
    [Id(2)] public bool ReferrerRefused { get; init; }

    /// <summary>
    /// Null for the member's own referral; otherwise the <see cref="MergedReferral.Subject"/> of a
    /// duplicate's referral it took over, whose reversal the referrer was told of (or refused).
    /// </summary>
    [Id(3)] public string? Subject { get; init; }
}

/// <summary>A survey answer: the score with the member's tier at the time, and the reward's lot.</summary>
[GenerateSerializer, Immutable]
public sealed record FeedbackDetails : EntryDetails, ILotCredit
{
    /// <summary>The score, 0..10.</summary>
    [Id(0)] public int Score { get; init; }

    /// <summary>The member's tier when it answered.</summary>
    [Id(1)] public string? TierAfter { get; init; }

    /// <inheritdoc />
    [Id(2)] public DateTimeOffset? ExpiresAt { get; init; }
}

/// <summary>A personal bonus day booked, with the tier that allowed it.</summary>
[GenerateSerializer, Immutable]
public sealed record BonusDayBookedDetails : EntryDetails
{
    /// <summary>The program-local day booked (DateOnly.DayNumber).</summary>
    [Id(0)] public int BonusDay { get; init; }

    /// <summary>The member's tier when it booked.</summary>
    [Id(1)] public string? TierAfter { get; init; }
}

/// <summary>A birthday: the year it is for, the gift with until when it may be redeemed, and the points' lot.</summary>
[GenerateSerializer, Immutable]
public sealed record BirthdayDetails : EntryDetails, ILotCredit
{
    /// <summary>The grant.</summary>
    [Id(0)] public BirthdayGrant? Birthday { get; init; }

    /// <inheritdoc />
    [Id(1)] public DateTimeOffset? ExpiresAt { get; init; }
}

/// <summary>Details of the membership entries: the plan and the term it runs to.</summary>
[GenerateSerializer, Immutable]
public abstract record MembershipDetails : EntryDetails
{
    /// <summary>The plan and its term.</summary>
    [Id(0)] public MembershipChange? Membership { get; init; }

    /// <summary>The details of the membership entry of <paramref name="kind"/>.</summary>
    public static MembershipDetails Of(LedgerEntryKind kind, MembershipChange change) => kind switch
    {
        LedgerEntryKind.MembershipStarted => new MembershipStartedDetails { Membership = change },
        LedgerEntryKind.MembershipRenewed => new MembershipRenewedDetails { Membership = change },
        LedgerEntryKind.MembershipCancelled => new MembershipCancelledDetails { Membership = change },
        LedgerEntryKind.MembershipLapsed => new MembershipLapsedDetails { Membership = change },
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a membership entry kind."),
    };
}

/// <summary>A paid membership (or its trial) began.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipStartedDetails : MembershipDetails;

/// <summary>A membership was renewed.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipRenewedDetails : MembershipDetails;

/// <summary>A membership was cancelled; it lapses when its term ends.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipCancelledDetails : MembershipDetails;

/// <summary>A membership's term ended without a renewal.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipLapsedDetails : MembershipDetails;

/// <summary>Details of the trade-in entries: the item's category and, once inspected, its condition.</summary>
[GenerateSerializer, Immutable]
public abstract record TradeInDetails : EntryDetails
{
    /// <summary>The item.</summary>
    [Id(0)] public TradeInRecord? TradeIn { get; init; }
}

/// <summary>An item handed in, waiting for inspection.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInSubmittedDetails : TradeInDetails;

/// <summary>An inspected trade-in accepted: the store credit it gave.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInAcceptedDetails : TradeInDetails
{
    /// <summary>The credit, in minor units, added to the store-credit wallet.</summary>
    [Id(0)] public long WalletMinor { get; init; }
}

/// <summary>An inspected trade-in rejected: no credit.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInRejectedDetails : TradeInDetails;
