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
/// The explanation stored with a ledger entry, and returned with its acknowledgement. Replay
/// reads it instead of re-evaluating the rules, so a member's state never depends on the
/// configuration of today: earn entries carry their components, the tier decision and the
/// calendar buckets they count in; return entries carry what they reversed and from where.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record EntryDetails
{
    /// <summary>The parts of the earn (for a return: the part of each original component reversed, as positive numbers).</summary>
    [Id(0)] public IReadOnlyList<BreakdownComponent> Components { get; init; } = [];

    /// <summary>Caps that cut this earn: "daily", "monthly", "campaign:ID".</summary>
    [Id(1)] public IReadOnlyList<string> CapsHit { get; init; } = [];

    /// <summary>Points the caps removed.</summary>
    [Id(2)] public long CappedPoints { get; init; }

    /// <summary>The member's tier when the event arrived (after any review that was due).</summary>
    [Id(3)] public string? TierBefore { get; init; }

    /// <summary>The member's tier after the event.</summary>
    [Id(4)] public string? TierAfter { get; init; }

    /// <summary>When the tier after the event is next reviewed for a downgrade; null for the entry tier.</summary>
    [Id(5)] public DateTimeOffset? TierReviewAt { get; init; }

    /// <summary>The program-local calendar day (DateOnly.DayNumber) of the purchase, for the daily cap.</summary>
    [Id(6)] public int EarnDay { get; init; }

    /// <summary>The program-local month (year * 12 + month - 1) of the purchase, for the monthly cap.</summary>
    [Id(7)] public int EarnMonth { get; init; }

    /// <summary>Earn: the basket per SKU (for line-item returns). Return: the SKUs returned.</summary>
    [Id(8)] public IReadOnlyList<SkuAmount>? Lines { get; init; }

    /// <summary>Return: points taken from the purchase's still-pending lot.</summary>
    [Id(9)] public long PendingReversed { get; init; }

    /// <summary>Return: points taken from the active balance.</summary>
    [Id(10)] public long ActiveReversed { get; init; }

    /// <summary>Return: points that should have been reversed but were not (balance floored at zero).</summary>
    [Id(11)] public long Shortfall { get; init; }

    /// <summary>Return: money returned, in minor units.</summary>
    [Id(12)] public long ReturnedAmountMinor { get; init; }

    /// <summary>Return: when the original purchase was recorded (its qualification day).</summary>
    [Id(13)] public DateTimeOffset? OriginalRecordedAt { get; init; }

    /// <summary>Flags entry: the member's flags from now on.</summary>
    [Id(14)] public IReadOnlyList<string>? Flags { get; init; }

    /// <summary>The tier was lowered by a review before this event, from this tier.</summary>
    [Id(15)] public string? DowngradedFrom { get; init; }

    /// <summary>Earn, enrolment, positive adjustment: when the lot this entry creates expires; null when never.</summary>
    [Id(16)] public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>
    /// The lots this entry touched: spent (redeem), taken back (return, negative adjustment),
    /// expired, or warned about. Replay applies exactly these, so it never re-decides.
    /// </summary>
    [Id(17)] public IReadOnlyList<LotUse>? Lots { get; init; }

    /// <summary>Redeem, reserve: the reward and how many units.</summary>
    [Id(18)] public string? RewardId { get; init; }

    /// <inheritdoc cref="RewardId"/>
    [Id(19)] public int Quantity { get; init; }

    /// <summary>Reserve: when the hold lapses if neither committed nor cancelled.</summary>
    [Id(20)] public DateTimeOffset? LapsesAt { get; init; }

    /// <summary>Reserve: the points held. Reservation end: the state it ended in (cancelled or lapsed).</summary>
    [Id(21)] public long HeldPoints { get; init; }

    /// <inheritdoc cref="HeldPoints"/>
    [Id(22)] public ReservationState EndedAs { get; init; }

    /// <summary>Expiry warning: the inactivity deadline warned about; expire: set when inactivity caused it.</summary>
    [Id(23)] public DateTimeOffset? InactivityDeadline { get; init; }

    /// <summary>Earn: the referrer's reward this first qualifying purchase earns it (the referred member's is a component).</summary>
    [Id(24)] public long ReferrerReward { get; init; }

    /// <summary>Return: it reversed the referral rewards (the qualifying purchase came back in full).</summary>
    [Id(25)] public bool ReferralReversed { get; init; }

    /// <summary>Return: the points a full return of a purchase paid partly in points gives back, to the lots they came from.</summary>
    [Id(26)] public IReadOnlyList<LotUse>? Restored { get; init; }

    /// <summary>Profile entry: the names of the fields the member now has (never their values).</summary>
    [Id(27)] public IReadOnlyList<string>? ProfileFields { get; init; }

    /// <summary>Merge entries: what moved from the merged-away member to the survivor.</summary>
    [Id(28)] public MergeTransfer? Merge { get; init; }

    /// <summary>Repointed entry: the member id that was replaced (the entry's reference is the new one).</summary>
    [Id(29)] public string? ReplacedMember { get; init; }

    /// <summary>Merge-in: the survivor had no referrer and takes the duplicate's, with its referral status.</summary>
    [Id(30)] public bool InheritsReferrer { get; init; }

    /// <summary>Return: the purchase was made by a duplicate account since merged into this member.</summary>
    [Id(31)] public bool MergedPurchase { get; init; }

    /// <summary>
    /// Return that took points from the purchase's pending lot: when that lot was to become
    /// spendable. Reports use it to cancel the reversed points' scheduled maturity.
    /// </summary>
    [Id(32)] public DateTimeOffset? PendingAvailableAt { get; init; }

    /// <summary>Earn: the purchase's place among the member's purchases (<see cref="PurchaseActivity"/> flags), for reports.</summary>
    [Id(33)] public int Activity { get; init; }

    /// <summary>Feedback: the score, 0..10 (the member's tier at the time is <see cref="TierAfter"/>).</summary>
    [Id(34)] public int Score { get; init; }

    /// <summary>
    /// The cause money goes to: a donation reward's (redeem; the money is the entry's amount), or
    /// the cause a purchase gives a share to (earn and its returns; the money is <see cref="GivenMinor"/>).
    /// </summary>
    [Id(35)] public string? Cause { get; init; }

    /// <summary>Bonus-day booking: the program-local day booked (DateOnly.DayNumber).</summary>
    [Id(36)] public int BonusDay { get; init; }

    /// <summary>Earn: the money (minor units) the purchase gives to <see cref="Cause"/>; return: the part taken back, negative.</summary>
    [Id(37)] public long GivenMinor { get; init; }

    /// <summary>Birthday: the year it is for, and the gift with until when it may be redeemed.</summary>
    [Id(38)] public BirthdayGrant? Birthday { get; init; }

    /// <summary>Redeem: one unit was the member's birthday gift, for no points.</summary>
    [Id(39)] public bool BirthdayGift { get; init; }

    /// <summary>Profile: the birthday's month (1..12) when the profile has a birthday; 0 otherwise.</summary>
    [Id(40)] public int BirthMonth { get; init; }

    /// <summary>Membership entries: the plan and the term it runs to.</summary>
    [Id(41)] public MembershipChange? Membership { get; init; }

    /// <summary>Trade-in entries: the item's category and, once inspected, its condition.</summary>
    [Id(42)] public TradeInRecord? TradeIn { get; init; }

    /// <summary>
    /// The store-credit wallet's change in minor units: an accepted trade-in's credit (positive), a
    /// purchase's store credit spent as a tender (negative), a return's refund of it (positive).
    /// </summary>
    [Id(43)] public long WalletMinor { get; init; }

    /// <summary>The sum of the components.</summary>
    public long ComponentTotal() => Total(Components, Components.Count);

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
}
