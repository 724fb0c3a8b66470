namespace Loyalty;

/// <summary>
/// Every bound the engine enforces on input. A limit protects memory, the database and the
/// other members sharing a commit from one malformed or hostile event.
/// </summary>
public static class Limits
{
    /// <summary>Most purchases in one message of <c>Purchases.IngestBatches</c>.</summary>
    public const int IngestBatchPurchasesMax = 1_000;

    /// <summary>Longest program, member, store or transaction id, in characters.</summary>
    public const int IdLengthMax = 64;

    /// <summary>Longest SKU or category code, in characters.</summary>
    public const int CodeLengthMax = 64;

    /// <summary>Longest program name, in characters.</summary>
    public const int NameLengthMax = 200;

    /// <summary>Most line items one purchase may carry.</summary>
    public const int LineItemsMax = 500;

    /// <summary>Largest purchase total in minor units (one billion major units at exponent 2).</summary>
    public const long PurchaseAmountMinorMax = 100_000_000_000;

    /// <summary>Largest quantity on one line item.</summary>
    public const int LineQuantityMax = 100_000;

    /// <summary>Largest earn rate, in points per whole currency unit.</summary>
    public const long EarnPointsPerUnitMax = 10_000;

    /// <summary>How far in the future a purchase timestamp may lie (clock skew between tills).</summary>
    public static readonly TimeSpan PurchaseFutureSkewMax = TimeSpan.FromMinutes(15);

    /// <summary>The earliest time a purchase or return may name, whatever its program allows: 1970 and 0001 are unset clocks.</summary>
    public static readonly DateTimeOffset OccurredAtMin = new(2000, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>The largest <c>max_backdate_days</c> a program may set.</summary>
    public const int BackdateDaysMax = 3_650;

    /// <summary>Characters of a survey answer's comment.</summary>
    public const int CommentLengthMax = 1_000;

    /// <summary>
    /// Largest money value of 1,000 points, in minor units (100,000 = $1 a point). A report whose
    /// liability would not fit 64 bits (past 9.2e16 points outstanding at this value) answers
    /// OUT_OF_RANGE instead.
    /// </summary>
    public const long PointValueMinorPerThousandMax = 100_000;

    /// <summary>Largest ledger page.</summary>
    public const int LedgerPageSizeMax = 500;

    /// <summary>Ledger page size when the caller does not choose.</summary>
    public const int LedgerPageSizeDefault = 50;

    /// <summary>Most members one member may have referred (bounds the in-memory referral list).</summary>
    public const int ReferralsPerMemberMax = 10_000;

    /// <summary>Most duplicate accounts one member may absorb (directly or through its duplicates): bounds its merge history.</summary>
    public const int MergesPerMemberMax = 100;

    /// <summary>Longest pending (return) period, in days.</summary>
    public const int PendingDaysMax = 365;

    /// <summary>Largest sign-up bonus, campaign bonus, campaign cap or earn cap, in points.</summary>
    public const long BonusPointsMax = 1_000_000_000;

    /// <summary>Most SKU and category rules per program.</summary>
    public const int ProductRulesMax = 2_000;

    /// <summary>Most flag rules per program, and most flags per member.</summary>
    public const int FlagRulesMax = 32;

    /// <summary>Most campaigns configured on a program at once.</summary>
    public const int CampaignsMax = 100;

    /// <summary>Most tiers on a ladder.</summary>
    public const int TiersMax = 16;

    /// <summary>Most old tier names a ladder keeps mapped to its tiers (see <see cref="TierLadder.Renamed"/>).</summary>
    public const int TierRenamesMax = 64;

    /// <summary>Most perks listed per tier.</summary>
    public const int PerksMax = 32;

    /// <summary>Longest tier qualification window and grace, in days; also how long qualification history is kept.</summary>
    public const int TierWindowDaysMax = 730;

    /// <summary>Longest reason on a manual adjustment, in characters.</summary>
    public const int ReasonLengthMax = 500;

    /// <summary>Largest manual adjustment, in points either way.</summary>
    public const long AdjustmentPointsMax = 1_000_000_000;

    /// <summary>Longest expiry lifespan or inactivity period, in months.</summary>
    public const int ExpiryMonthsMax = 120;

    /// <summary>Earliest "expiring soon" warning, in days before the expiry.</summary>
    public const int ExpiryWarnDaysMax = 365;

    /// <summary>Most rewards in a program's catalogue.</summary>
    public const int RewardsMax = 1_000;

    /// <summary>Most units of one reward in one redemption.</summary>
    public const int RedeemQuantityMax = 1_000;

    /// <summary>Shortest and longest time a reservation holds points, in seconds.</summary>
    public const int ReservationHoldSecondsMin = 10;

    /// <inheritdoc cref="ReservationHoldSecondsMin"/>
    public const int ReservationHoldSecondsMax = 86_400;

    /// <summary>Longest referral cap period, in days.</summary>
    public const int ReferralPeriodDaysMax = 3_650;

    /// <summary>How far up the referral chain a cycle is looked for; a longer chain is refused as a possible cycle.</summary>
    public const int ReferralChainDepthMax = 64;

    /// <summary>
    /// How long the program's desk waits for a member's step of a change that touches two
    /// members (<c>[ResponseTimeout]</c> on those calls), instead of Orleans' default of 30 s.
    /// The desk holds the program's lock while it waits: were its call to give up first, the lock
    /// would go while the step still runs (a slow ledger, a chain walk of many grain calls), and an
    /// opposite request could pass the check the step made, and close a cycle. An hour is longer
    /// than any step takes (its own calls time out at 30 s each, its commits are retried for
    /// seconds); a silo that dies fails the call at once, and its step with it.
    /// </summary>
    public const string TwoMemberStepTimeout = "01:00:00";

    /// <summary>The same for the steps those steps call on the other member (shorter, so that the outer call outlives them).</summary>
    public const string TwoMemberInnerStepTimeout = "00:30:00";

    /// <summary>Most profile fields per member.</summary>
    public const int ProfileFieldsMax = 32;

    /// <summary>Longest profile field value, in characters.</summary>
    public const int ProfileValueLengthMax = 500;

    /// <summary>Most reservations one member may hold open at once.</summary>
    public const int OpenReservationsMax = 32;

    /// <summary>Most personal bonus days a tier may grant a member per year.</summary>
    public const int BonusDaysPerYearMax = 52;

    /// <summary>How far ahead a bonus day may be booked, in days.</summary>
    public const int BonusDayBookAheadDaysMax = 366;

    /// <summary>Most causes a giving programme lists.</summary>
    public const int CausesMax = 50;

    /// <summary>Most membership plans per program.</summary>
    public const int MembershipPlansMax = 20;

    /// <summary>Largest membership fee, in minor units.</summary>
    public const long MembershipFeeMinorMax = 100_000_000;

    /// <summary>Longest membership term and free trial.</summary>
    public const int MembershipTermMonthsMax = 36;

    /// <inheritdoc cref="MembershipTermMonthsMax"/>
    public const int MembershipTrialDaysMax = 365;

    /// <summary>How far ahead renewals may carry a membership's term, in months.</summary>
    public const int MembershipPaidAheadMonthsMax = 120;

    /// <summary>
    /// How many days after a membership's term ended a payment for the same plan still renews it
    /// (the term follows on from the one that ended, anchored as before) rather than starting a new
    /// membership: billing confirms a renewal charged at the term's end minutes or days later.
    /// </summary>
    public const int MembershipRenewalGraceDays = 7;

    /// <summary>Membership changes kept in a member's history.</summary>
    public const int MembershipHistoryMax = 24;

    /// <summary>Most rates in a trade-in table.</summary>
    public const int TradeInRatesMax = 500;

    /// <summary>Largest credit one traded-in item gives, in minor units.</summary>
    public const long TradeInCreditMinorMax = 10_000_000;

    /// <summary>Most trade-ins one member may have waiting for inspection.</summary>
    public const int OpenTradeInsMax = 50;
}
