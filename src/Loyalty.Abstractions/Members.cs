namespace Loyalty;

/// <summary>A request to enrol a member, optionally referred by another member of the program.</summary>
[GenerateSerializer, Immutable]
public sealed record Enrolment(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] string MemberId,
    [property: Id(2)] string? ReferredBy,
    [property: Id(3)] string? ReferralCode = null);

/// <summary>
/// A member's own links in the referral graph, as its ledger has them (see <c>IMemberLinkSteps.GetLinks</c>):
/// who referred it, who it was merged into, the members it referred whose side of the link is
/// not known to be written yet (null for none), and the duplicate whose merge into it was started
/// and is not over (null for none).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MemberLinks(
    [property: Id(0)] string? ReferredBy,
    [property: Id(1)] string? MergedInto,
    [property: Id(2)] IReadOnlyList<string>? Unconfirmed = null,
    [property: Id(3)] string? MergingFrom = null)
{
    /// <summary>No links: a member not enrolled.</summary>
    public static readonly MemberLinks None = new(null, null);
}

/// <summary>Points that are earned but not yet spendable, and when they become spendable.</summary>
[GenerateSerializer, Immutable]
public sealed record PendingPoints(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] Points Points,
    [property: Id(2)] DateTimeOffset AvailableAt);

/// <summary>A member as queries see it, at the moment of the query.</summary>
[GenerateSerializer, Immutable]
public sealed record MemberView(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] string MemberId,
    [property: Id(2)] Points Balance,
    [property: Id(3)] string Tier,
    [property: Id(4)] string? ReferredBy,
    [property: Id(5)] IReadOnlyList<string> Referrals,
    [property: Id(6)] Points LifetimeEarned,
    [property: Id(7)] DateTimeOffset EnrolledAt,
    [property: Id(8)] long LastSequence,
    [property: Id(9)] Points Pending,
    [property: Id(10)] IReadOnlyList<PendingPoints> PendingLots,
    [property: Id(11)] IReadOnlyList<string> Flags,
    [property: Id(12)] DateTimeOffset? TierReviewAt,
    [property: Id(13)] long TierQualifying,
    [property: Id(14)] IReadOnlyList<string> Perks,
    [property: Id(15)] Points Shortfall,
    [property: Id(16)] Points LifetimeReversed,
    [property: Id(17)] Points Held = default,
    [property: Id(18)] Points LifetimeRedeemed = default,
    [property: Id(19)] Points LifetimeExpired = default,
    [property: Id(20)] IReadOnlyList<UpcomingExpiry>? Expiring = null,
    [property: Id(21)] DateTimeOffset? LastActivityAt = null,
    [property: Id(22)] string? ReferralQualifiedBy = null,
    [property: Id(23)] IReadOnlyDictionary<string, string>? Profile = null,
    [property: Id(24)] bool Erased = false,
    [property: Id(25)] string? MergedInto = null,
    [property: Id(26)] IReadOnlyList<string>? MergedFrom = null,
    [property: Id(27)] TierProgress? TierProgress = null,
    [property: Id(28)] IReadOnlyList<DateOnly>? BonusDays = null,
    [property: Id(29)] int BonusDaysLeft = 0,
    [property: Id(30)] string? Cause = null,
    [property: Id(31)] long GivenMinor = 0,
    [property: Id(32)] BirthdayGrant? BirthdayGift = null,
    [property: Id(33)] MembershipView? Membership = null,
    [property: Id(34)] long WalletMinor = 0,
    [property: Id(35)] IReadOnlyList<OpenTradeIn>? TradeIns = null,
    [property: Id(36)] Points? SpendableNow = null)
{
    /// <summary>
    /// Points the member can spend now: the balance less points held by open reservations, less
    /// points past their expiry whose write-off is not written yet (the member's wake comes within
    /// the schedule's spread after it). A view without <see cref="SpendableNow"/> (from an older
    /// silo) counts the balance less held points.
    /// </summary>
    public Points Available => SpendableNow ?? Balance - Held;
}

/// <summary>
/// A member's way up (and its hold on) the tier ladder, in the ladder's basis: points, or money
/// in minor units for a spend ladder.
/// </summary>
/// <param name="Basis">What the amounts count.</param>
/// <param name="NextTier">The tier above, or null at the top.</param>
/// <param name="NextThreshold">The next tier's threshold (0 at the top).</param>
/// <param name="ToNextTier">What the rolling window still needs to reach the next tier; 0 at the top.</param>
/// <param name="KeepTierBy">When the held tier is next reviewed; null in the entry tier.</param>
/// <param name="ToKeepTier">What the window must still gain by then to keep the tier (what drops out of it by then counted).</param>
[GenerateSerializer, Immutable]
public sealed record TierProgress(
    [property: Id(0)] TierBasis Basis,
    [property: Id(1)] string? NextTier,
    [property: Id(2)] long NextThreshold,
    [property: Id(3)] long ToNextTier,
    [property: Id(4)] DateTimeOffset? KeepTierBy,
    [property: Id(5)] long ToKeepTier);

/// <summary>The answer to an enrolment.</summary>
[GenerateSerializer, Immutable]
public sealed record EnrolmentResult(
    [property: Id(0)] MemberView? Member,
    [property: Id(1)] bool AlreadyEnrolled,
    [property: Id(2)] LoyaltyError Error,
    [property: Id(3)] string? ErrorMessage)
{
    /// <summary>A refusal with the reason.</summary>
    public static EnrolmentResult Reject(LoyaltyError error, string message) => new(null, false, error, message);
}

/// <summary>The answer to a change of member details (flags).</summary>
[GenerateSerializer, Immutable]
public sealed record MemberResult(
    [property: Id(0)] MemberView? Member,
    [property: Id(1)] LoyaltyError Error,
    [property: Id(2)] string? ErrorMessage)
{
    /// <summary>A refusal with the reason.</summary>
    public static MemberResult Reject(LoyaltyError error, string message) => new(null, error, message);
}

/// <summary>What a ledger entry records.</summary>
public enum LedgerEntryKind : short
{
    /// <summary>The member joined the program.</summary>
    Enrol = 1,

    /// <summary>Points earned by a purchase.</summary>
    Earn = 2,

    /// <summary>This member referred another member (no points yet; rewards come with the rules).</summary>
    ReferralLink = 3,

    /// <summary>Points reversed by a (partial) return of an earlier purchase.</summary>
    Return = 4,

    /// <summary>A manual adjustment by support staff, with its reason.</summary>
    Adjust = 5,

    /// <summary>The member's flags were set (no points).</summary>
    Flags = 6,

    /// <summary>Points spent on a reward: a direct redeem, or the commit of a reservation.</summary>
    Redeem = 7,

    /// <summary>Points held for a reward at the till until the reservation is committed, cancelled or lapses (no points move).</summary>
    Reserve = 8,

    /// <summary>A reservation was cancelled or lapsed; its points are free again (no points move).</summary>
    ReservationEnd = 9,

    /// <summary>Points expired (breakage): their lots reached their expiry, or the member was inactive too long.</summary>
    Expire = 10,

    /// <summary>The member was warned that points expire soon (no points move).</summary>
    ExpiryWarning = 11,

    /// <summary>An enrolled member entered who referred it (no points move).</summary>
    Referred = 12,

    /// <summary>The referrer's reward for a referred member's first qualifying purchase, or its reversal.</summary>
    ReferralReward = 13,

    /// <summary>The member's profile fields were replaced (the entry names the fields, never their values).</summary>
    Profile = 14,

    /// <summary>The member's personal data was erased on request; amounts are kept.</summary>
    Erase = 15,

    /// <summary>This duplicate account was merged into another (reference); its points left with it.</summary>
    MergedAway = 16,

    /// <summary>A duplicate account (reference) was merged into this one; its points arrived.</summary>
    MergedIn = 17,

    /// <summary>A referral link now names the survivor of a merge instead of the merged-away member.</summary>
    Repointed = 18,

    /// <summary>The referrer has recorded its reward (or its reversal) for this member's qualifying purchase (no points move).</summary>
    ReferralSettled = 19,

    /// <summary>The member answered a survey (score 0..10, comment as the reason, channel as the reference); the program's reward, if any, as points.</summary>
    Feedback = 20,

    /// <summary>The member booked a personal bonus day (no points move; the day is in the details).</summary>
    BonusDayBooked = 21,

    /// <summary>The member chose the cause its purchases give to (reference: the cause; none to stop giving).</summary>
    CauseChosen = 22,

    /// <summary>The member's birthday month began: the program's birthday points, and its gift to redeem until the month ends.</summary>
    Birthday = 23,

    /// <summary>A paid membership (or its free trial) began: payment id, fee and currency as the entry's transaction, amount and currency.</summary>
    MembershipStarted = 24,

    /// <summary>A paid membership was renewed by a payment: its term runs on.</summary>
    MembershipRenewed = 25,

    /// <summary>The membership was cancelled: it lapses when its term ends.</summary>
    MembershipCancelled = 26,

    /// <summary>The membership's term ended without a renewal.</summary>
    MembershipLapsed = 27,

    /// <summary>An item was handed in for trade-in credit and waits for inspection (transaction: the trade-in id).</summary>
    TradeInSubmitted = 28,

    /// <summary>An inspected trade-in was accepted: its credit went to the store-credit wallet (reference: the trade-in id).</summary>
    TradeInAccepted = 29,

    /// <summary>An inspected trade-in was rejected: no credit (reference: the trade-in id).</summary>
    TradeInRejected = 30,

    /// <summary>
    /// A tier review, written when it fell due (no points move): it lowered the member's tier, so
    /// a member who stops buying is recorded, reported and announced in its lower tier on time,
    /// not only at its next purchase; or it kept the tier for another window (tier before and
    /// after the same), so that the review, once done, is not judged again later.
    /// </summary>
    TierReviewed = 31,

    /// <summary>
    /// The referred member's side of a referral link (reference) is written: the link, recorded
    /// first here at the referrer, stands (no points move).
    /// </summary>
    ReferralConfirmed = 32,

    /// <summary>
    /// The referred member's side of a referral link (reference) was never written (its change failed
    /// or was refused there): the referrer no longer lists it, and the link's place under the
    /// referral caps is free again (no points move).
    /// </summary>
    ReferralWithdrawn = 33,

    /// <summary>
    /// The survivor's intent to take in a duplicate account (reference), written before the
    /// duplicate lets go: until a <see cref="MergeSettled"/> entry follows, the merge is not over,
    /// and the survivor's due schedule has it completed (no points move).
    /// </summary>
    MergeStarted = 34,

    /// <summary>
    /// The merge of a duplicate account (reference) into this member is over: taken in with its
    /// referral links moved, or abandoned because the duplicate refused to let go (its details say
    /// which; the reason, why). No points move.
    /// </summary>
    MergeSettled = 35,
}

/// <summary>One change to a member, as the append-only ledger holds it.</summary>
[GenerateSerializer, Immutable]
public sealed record LedgerEntry(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] string MemberId,
    [property: Id(2)] long Sequence,
    [property: Id(3)] LedgerEntryKind Kind,
    [property: Id(4)] Points Points,
    [property: Id(5)] string? TransactionId,
    [property: Id(6)] long Fingerprint,
    [property: Id(7)] string? StoreId,
    [property: Id(8)] long AmountMinor,
    [property: Id(9)] string? Currency,
    [property: Id(10)] string? Reason,
    [property: Id(11)] string? Reference,
    [property: Id(12)] DateTimeOffset OccurredAt,
    [property: Id(13)] DateTimeOffset RecordedAt,
    [property: Id(14)] long ProgramVersion = 0,
    [property: Id(15)] DateTimeOffset? AvailableAt = null,
    [property: Id(16)] EntryDetails? Details = null)
{
    /// <summary>
    /// The details as the record of this entry's kind; null when the entry has none (kinds without
    /// details, a profile note after erasure). Details of another kind's record throw: an entry
    /// never carries another kind's facts.
    /// </summary>
    public T? DetailsAs<T>()
        where T : EntryDetails =>
        Details switch
        {
            null => null,
            T mine => mine,
            var other => throw new InvalidOperationException($"Entry {Sequence} of member '{MemberId}' is a {Kind} with details of type {other.GetType().Name}, not {typeof(T).Name}."),
        };
}

/// <summary>A page of a member's ledger, newest first.</summary>
[GenerateSerializer, Immutable]
public sealed record LedgerPage(
    [property: Id(0)] IReadOnlyList<LedgerEntry> Entries,
    [property: Id(1)] long? NextBeforeSequence,
    [property: Id(2)] string? NextMember = null)
{
    /// <summary>Whether there is a next page.</summary>
    public bool HasMore => NextBeforeSequence is not null || NextMember is not null;
}
