namespace Loyalty.Storage.Reports;

/// <summary>
/// What a program's report totals count, per day. Point flows are stored as positive numbers; a
/// flow's direction is <see cref="ReportFacts.SignOf"/>. Every entry's points are split over the
/// flows exactly, so the signed sum of the flows up to a day is the sum of the ledger up to it.
/// The numbers are stored in <c>report_totals</c>: each is given to one figure and never reused.
/// </summary>
public enum ReportMetric : short
{
    /// <summary>Points earned by purchases: base rate, product rules, tier and flag multipliers.</summary>
    IssuedPurchases = 1,

    /// <summary>Points from bonus campaigns, personal bonus days and birthdays.</summary>
    IssuedBonuses = 2,

    /// <summary>Sign-up bonuses (on enrolment or on the first purchase).</summary>
    IssuedSignup = 3,

    /// <summary>Referral rewards, to the referred member and to the referrer.</summary>
    IssuedReferrals = 4,

    /// <summary>Points added by support staff.</summary>
    IssuedAdjustments = 5,

    /// <summary>Points removed by support staff.</summary>
    DeductedAdjustments = 6,

    /// <summary>Points reversed by returns (and reversed referral rewards).</summary>
    Reversed = 7,

    /// <summary>Points spent on rewards; the key is the reward id.</summary>
    Redeemed = 8,

    /// <summary>Units of rewards redeemed; the key is the reward id.</summary>
    RedeemedUnits = 15,

    /// <summary>Money of rewards redeemed (discounts, product values, donations) in minor units; the key is the reward id.</summary>
    RedeemedValue = 16,

    /// <summary>Money donated through donation rewards, in minor units; the key is the cause.</summary>
    Donated = 17,

    /// <summary>Donations made; the key is the cause.</summary>
    Donations = 18,

    /// <summary>Money purchases gave to causes (giving back), net of returns, in minor units; the key is the cause.</summary>
    Given = 19,

    /// <summary>Store credit given for accepted trade-ins, in minor units.</summary>
    StoreCreditIssued = 100,

    /// <summary>Store credit spent as a tender in purchases, in minor units.</summary>
    StoreCreditSpent = 101,

    /// <summary>Store credit given back by returns of purchases paid with it, in minor units.</summary>
    StoreCreditRefunded = 102,

    /// <summary>Points expired (breakage).</summary>
    Expired = 9,

    /// <summary>Points that arrived with a merged duplicate account.</summary>
    MergedIn = 10,

    /// <summary>Points that left with an account merged into another.</summary>
    MergedOut = 11,

    /// <summary>Points spent on a purchase that came back in full: returned to the member's lots, or counted as <see cref="Expired"/> when their lot has expired since.</summary>
    RedemptionsReturned = 12,

    /// <summary>Points given for survey answers.</summary>
    IssuedFeedback = 14,

    /// <summary>Points of an entry no other flow explains (signed; zero unless a new kind of entry moves points).</summary>
    Other = 13,

    /// <summary>Points earned into a pending lot.</summary>
    PendingAdded = 20,

    /// <summary>Pending points that become spendable, on the day they do (so future days may hold them).</summary>
    PendingMatured = 21,

    /// <summary>Pending points reversed by a return before they became spendable.</summary>
    PendingReversed = 22,

    /// <summary>Money of purchases, in the program's minor units.</summary>
    Sales = 30,

    /// <summary>Purchases (earn entries).</summary>
    Purchases = 31,

    /// <summary>Money returned, in minor units.</summary>
    ReturnedSales = 32,

    /// <summary>Returns.</summary>
    Returns = 33,

    /// <summary>Purchases that were their member's first.</summary>
    FirstTimePurchases = 34,

    /// <summary>Money of purchases that were their member's first, in minor units.</summary>
    FirstTimeSales = 35,

    /// <summary>Members enrolled.</summary>
    Enrolled = 40,

    /// <summary>Members merged into another (their accounts end): they leave the member count and their tier.</summary>
    MergedAway = 41,

    /// <summary>Members who made a purchase on the day (their first of the day).</summary>
    ActiveDay = 60,

    /// <summary>Purchases that were their member's first of the ISO week.</summary>
    ActiveWeek = 61,

    /// <summary>Purchases that were their member's first of the month.</summary>
    ActiveMonth = 62,

    /// <summary>Purchases that were their member's first of the year.</summary>
    ActiveYear = 63,

    /// <summary>Purchases that were their member's second of the day.</summary>
    RepeatDay = 64,

    /// <summary>Purchases that were their member's second of the ISO week.</summary>
    RepeatWeek = 65,

    /// <summary>Purchases that were their member's second of the month.</summary>
    RepeatMonth = 66,

    /// <summary>Purchases that were their member's second of the year.</summary>
    RepeatYear = 67,

    /// <summary>Members who entered a tier (the key), on enrolment or by a move.</summary>
    TierEntered = 70,

    /// <summary>Members who left a tier (the key).</summary>
    TierLeft = 71,

    /// <summary>Moves between tiers; the key is "from>to".</summary>
    TierMoves = 72,

    /// <summary>Survey answers scoring 9-10; the key is the member's tier when it answered.</summary>
    NpsPromoters = 90,

    /// <summary>Survey answers scoring 7-8, by tier.</summary>
    NpsPassives = 91,

    /// <summary>Survey answers scoring 0-6, by tier.</summary>
    NpsDetractors = 92,

    /// <summary>Members enrolled with a referrer.</summary>
    ReferralsMade = 80,

    /// <summary>Referred members' first qualifying purchases (both sides rewarded).</summary>
    ReferralsQualified = 81,

    /// <summary>
    /// Points redeemed from lots whose expiry date is the day (the day is the lot's, not the
    /// redemption's, so future days hold totals too); for breakage on matured lots.
    /// </summary>
    CohortRedeemed = 50,

    /// <summary>Points expired from lots whose expiry date is the day (lots without one are left out).</summary>
    CohortExpired = 51,
}

/// <summary>One day's total of a metric (and key) of a program.</summary>
/// <param name="Day">The UTC day (<see cref="DateOnly.DayNumber"/>).</param>
/// <param name="Metric">What is counted.</param>
/// <param name="Key">A sub-total's key (a reward id) or "".</param>
/// <param name="Value">The total.</param>
public readonly record struct ReportTotal(int Day, ReportMetric Metric, string Key, long Value);

/// <summary>
/// The report totals of ledger entries: a pure function of each entry, added up per batch and
/// written in the same transaction as the entries, so reports see exactly what the ledger holds.
/// </summary>
public static class ReportFacts
{
    /// <summary>The UTC day of a time, as reports bucket it.</summary>
    public static int DayOf(DateTimeOffset at) => DateOnly.FromDateTime(at.UtcDateTime).DayNumber;

    /// <summary>+1 for flows that add points to the program's outstanding total, −1 for those that take them, 0 for others.</summary>
    public static int SignOf(ReportMetric metric) => metric switch
    {
        ReportMetric.IssuedPurchases or ReportMetric.IssuedBonuses or ReportMetric.IssuedSignup or ReportMetric.IssuedReferrals
            or ReportMetric.IssuedAdjustments or ReportMetric.IssuedFeedback or ReportMetric.MergedIn or ReportMetric.RedemptionsReturned or ReportMetric.Other => 1,
        ReportMetric.DeductedAdjustments or ReportMetric.Reversed or ReportMetric.Redeemed or ReportMetric.Expired or ReportMetric.MergedOut => -1,
        _ => 0,
    };

    /// <summary>Adds what <paramref name="e"/> contributes to <paramref name="into"/>.</summary>
    public static void Collect(LedgerEntry e, ReportTotals into)
    {
        int day = DayOf(e.RecordedAt);
        long explained = e.Kind switch
        {
            LedgerEntryKind.Earn => Earn(e, day, into),
            LedgerEntryKind.Enrol => Enrol(e, day, into),
            LedgerEntryKind.Return => Return(e, day, into),
            LedgerEntryKind.Redeem => Redeem(e, day, into),
            LedgerEntryKind.Expire => Expire(e, day, into),
            LedgerEntryKind.MergedIn => MergedIn(e, day, into),
            LedgerEntryKind.Referred => Referred(e, day, into),
            LedgerEntryKind.Feedback => Feedback(e, day, into),
            LedgerEntryKind.Birthday => Birthday(e, day, into),
            LedgerEntryKind.TradeInAccepted => TradeIn(e, day, into),
            LedgerEntryKind.MergedAway => MergedAway(e, day, into),
            LedgerEntryKind.Adjust or LedgerEntryKind.ReferralReward => Flow(e, day, into),
            LedgerEntryKind.TierReviewed => TierReviewed(e, day, into),
            _ => 0,
        };

        long rest = checked(e.Points.Value - explained);
        if (rest != 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.Other, "", rest);
        }
    }

    private static long Earn(LedgerEntry e, int day, ReportTotals into)
    {
        EarnDetails? d = e.DetailsAs<EarnDetails>();
        long bonuses = 0, signup = 0, referrals = 0;
        // By index: a foreach over the list's interface boxes its enumerator, once per purchase.
        IReadOnlyList<BreakdownComponent> components = d?.Components ?? [];
        for (int i = 0; i < components.Count; i++)
        {
            BreakdownComponent c = components[i];
            switch (c.Kind)
            {
                case ComponentKind.Campaign or ComponentKind.BonusDay: bonuses = checked(bonuses + c.Points); break;
                case ComponentKind.Signup: signup = checked(signup + c.Points); break;
                case ComponentKind.Referral: referrals = checked(referrals + c.Points); break;
            }
        }

        // The purchase's own points are the rest, so the parts always add up to the entry.
        long purchases = checked(e.Points.Value - bonuses - signup - referrals);
        into.Add(e.ProgramId, day, ReportMetric.IssuedPurchases, "", purchases);
        into.Add(e.ProgramId, day, ReportMetric.IssuedBonuses, "", bonuses);
        into.Add(e.ProgramId, day, ReportMetric.IssuedSignup, "", signup);
        into.Add(e.ProgramId, day, ReportMetric.IssuedReferrals, "", referrals);
        into.Add(e.ProgramId, day, ReportMetric.Sales, "", e.AmountMinor);
        into.Add(e.ProgramId, day, ReportMetric.Purchases, "", 1);
        Activity(e, d?.Activity ?? 0, day, into);
        Tiers(e, day, into);
        Giving(e, day, into);
        if (d?.WalletMinor < 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.StoreCreditSpent, "", -d.WalletMinor);
        }
        if (referrals > 0 || d?.ReferrerReward > 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.ReferralsQualified, "", 1);
        }
        Pending(e, day, into);

        return e.Points.Value;
    }

    /// <summary>The purchase's place among its member's purchases: first ever, first or second of its day, week, month, year.</summary>
    private static void Activity(LedgerEntry e, int flags, int day, ReportTotals into)
    {
        if ((flags & PurchaseActivity.FirstEver) != 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.FirstTimePurchases, "", 1);
            into.Add(e.ProgramId, day, ReportMetric.FirstTimeSales, "", e.AmountMinor);
        }

        if (flags == 0)
        {
            return;
        }

        for (int i = 0; i < PurchaseActivity.Periods.Count; i++)
        {
            PurchaseActivity.Period period = PurchaseActivity.Periods[i];
            if ((flags & PurchaseActivity.FirstIn(period)) != 0)
            {
                into.Add(e.ProgramId, day, ReportMetric.ActiveDay + (short)period, "", 1);
            }

            if ((flags & PurchaseActivity.SecondIn(period)) != 0)
            {
                into.Add(e.ProgramId, day, ReportMetric.RepeatDay + (short)period, "", 1);
            }
        }
    }

    /// <summary>The money a purchase gave to its cause, or a return took back (negative).</summary>
    private static void Giving(LedgerEntry e, int day, ReportTotals into)
    {
        if (e.Details is IMoneyMoved { GivenMinor: not 0, Cause: { } cause } d)
        {
            into.Add(e.ProgramId, day, ReportMetric.Given, cause, d.GivenMinor);
        }
    }

    /// <summary>A tier review, written when it fell due: a tier move when it lowered the tier (none when it kept it), no points.</summary>
    private static long TierReviewed(LedgerEntry e, int day, ReportTotals into)
    {
        Tiers(e, day, into);
        return 0;
    }

    /// <summary>Tier moves an entry records: a downgrade by review before it, then its own change.</summary>
    private static void Tiers(LedgerEntry e, int day, ReportTotals into)
    {
        if (e.Details is not ITierOutcome { TierAfter: { } after } d)
        {
            return;
        }

        string before = d.TierBefore ?? after;
        if (d.DowngradedFrom is { } from && from != before)
        {
            Move(e.ProgramId, day, from, before, into);
        }

        if (before != after)
        {
            Move(e.ProgramId, day, before, after, into);
        }
    }

    private static void Move(string programId, int day, string from, string to, ReportTotals into)
    {
        into.Add(programId, day, ReportMetric.TierLeft, from, 1);
        into.Add(programId, day, ReportMetric.TierEntered, to, 1);
        into.Add(programId, day, ReportMetric.TierMoves, from + ">" + to, 1);
    }

    /// <summary>An entry whose points start pending: added now, maturing on the day they become spendable.</summary>
    private static void Pending(LedgerEntry e, int day, ReportTotals into)
    {
        if (e.AvailableAt is { } available && available > e.RecordedAt && e.Points.Value > 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.PendingAdded, "", e.Points.Value);
            into.Add(e.ProgramId, DayOf(available), ReportMetric.PendingMatured, "", e.Points.Value);
        }
    }

    private static long Enrol(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.Enrolled, "", 1);
        into.Add(e.ProgramId, day, ReportMetric.TierEntered, e.DetailsAs<EnrolDetails>()?.TierAfter ?? "", 1);
        if (e.Reference is not null)
        {
            into.Add(e.ProgramId, day, ReportMetric.ReferralsMade, "", 1);
        }

        into.Add(e.ProgramId, day, ReportMetric.IssuedSignup, "", e.Points.Value);
        Pending(e, day, into);

        return e.Points.Value;
    }

    private static long Return(LedgerEntry e, int day, ReportTotals into)
    {
        ReturnDetails d = e.DetailsAs<ReturnDetails>() ?? new ReturnDetails();
        long reversed = checked(d.PendingReversed + d.ActiveReversed);
        long restored = 0;
        foreach (LotUse lot in d.Restored ?? [])
        {
            restored = checked(restored + lot.Points);
            if (lot.ExpiresAt is { } expires)
            {
                into.Add(e.ProgramId, DayOf(expires), ReportMetric.CohortRedeemed, "", -lot.Points);
            }
        }

        // Points the purchase spent from lots that have expired since: the redemption is undone
        // (they count as returned) and they expire (breakage), in their lot's cohort.
        long expired = 0;
        foreach (LotUse lot in d.ExpiredUnrestored ?? [])
        {
            expired = checked(expired + lot.Points);
            into.Add(e.ProgramId, day, ReportMetric.Expired, "", lot.Points);
            if (lot.ExpiresAt is { } expires)
            {
                into.Add(e.ProgramId, DayOf(expires), ReportMetric.CohortRedeemed, "", -lot.Points);
                into.Add(e.ProgramId, DayOf(expires), ReportMetric.CohortExpired, "", lot.Points);
            }
        }

        into.Add(e.ProgramId, day, ReportMetric.Reversed, "", reversed);
        into.Add(e.ProgramId, day, ReportMetric.RedemptionsReturned, "", checked(restored + expired));
        into.Add(e.ProgramId, day, ReportMetric.ReturnedSales, "", d.ReturnedAmountMinor);
        into.Add(e.ProgramId, day, ReportMetric.Returns, "", 1);
        Giving(e, day, into);
        if (d.WalletMinor > 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.StoreCreditRefunded, "", d.WalletMinor);
        }
        if (d.PendingReversed > 0)
        {
            into.Add(e.ProgramId, day, ReportMetric.PendingReversed, "", d.PendingReversed);
            if (d.PendingAvailableAt is { } available)
            {
                // Those points will not mature after all.
                into.Add(e.ProgramId, DayOf(available), ReportMetric.PendingMatured, "", -d.PendingReversed);
            }
        }

        // The expired points came back from the redemption and left again: they move nothing.
        return checked(restored - reversed);
    }

    private static long Redeem(LedgerEntry e, int day, ReportTotals into)
    {
        RedeemDetails? d = e.DetailsAs<RedeemDetails>();
        string reward = d?.RewardId ?? "";
        into.Add(e.ProgramId, day, ReportMetric.Redeemed, reward, -e.Points.Value);
        into.Add(e.ProgramId, day, ReportMetric.RedeemedUnits, reward, d?.Quantity ?? 0);
        into.Add(e.ProgramId, day, ReportMetric.RedeemedValue, reward, e.AmountMinor);
        if (d?.Cause is { } cause)
        {
            into.Add(e.ProgramId, day, ReportMetric.Donated, cause, e.AmountMinor);
            into.Add(e.ProgramId, day, ReportMetric.Donations, cause, 1);
        }

        foreach (LotUse lot in d?.Lots ?? [])
        {
            if (lot.ExpiresAt is { } expires)
            {
                into.Add(e.ProgramId, DayOf(expires), ReportMetric.CohortRedeemed, "", lot.Points);
            }
        }

        return e.Points.Value;
    }

    private static long Expire(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.Expired, "", -e.Points.Value);
        foreach (LotUse lot in e.DetailsAs<ExpireDetails>()?.Lots ?? [])
        {
            // Counted like the lot's redemptions, on its own expiry day (even when inactivity took
            // it earlier), so a cohort's rate compares like with like; lots without an expiry date
            // never mature and are left out on both sides.
            if (lot.ExpiresAt is { } expires)
            {
                into.Add(e.ProgramId, DayOf(expires), ReportMetric.CohortExpired, "", lot.Points);
            }
        }

        return e.Points.Value;
    }

    private static long Feedback(LedgerEntry e, int day, ReportTotals into)
    {
        FeedbackDetails? d = e.DetailsAs<FeedbackDetails>();
        int score = d?.Score ?? 0;
        ReportMetric answer = score >= 9 ? ReportMetric.NpsPromoters : score >= 7 ? ReportMetric.NpsPassives : ReportMetric.NpsDetractors;
        into.Add(e.ProgramId, day, answer, d?.TierAfter ?? "", 1);
        into.Add(e.ProgramId, day, ReportMetric.IssuedFeedback, "", e.Points.Value);
        return e.Points.Value;
    }

    /// <summary>An accepted trade-in's store credit (no points move).</summary>
    private static long TradeIn(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.StoreCreditIssued, "", e.DetailsAs<TradeInAcceptedDetails>()?.WalletMinor ?? 0);
        return 0;
    }

    /// <summary>A birthday's points, counted with the bonuses.</summary>
    private static long Birthday(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.IssuedBonuses, "", e.Points.Value);
        return e.Points.Value;
    }

    /// <summary>An enrolled member's referrer recorded later (no points move).</summary>
    private static long Referred(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.ReferralsMade, "", 1);
        return 0;
    }

    /// <summary>A duplicate's account ends: one member less, and one less in the tier it held (the survivor's entry counts the survivor's move).</summary>
    private static long MergedAway(LedgerEntry e, int day, ReportTotals into)
    {
        into.Add(e.ProgramId, day, ReportMetric.MergedAway, "", 1);
        if (e.DetailsAs<MergedAwayDetails>() is { } away && (away.TierRecorded ?? away.Merge?.Tier) is { Length: > 0 } tier)
        {
            into.Add(e.ProgramId, day, ReportMetric.TierLeft, tier, 1);
        }

        return Flow(e, day, into);
    }

    private static long MergedIn(LedgerEntry e, int day, ReportTotals into)
    {
        Tiers(e, day, into);
        return Flow(e, day, into);
    }

    /// <summary>Entries that move points one way or the other under one pair of flows.</summary>
    private static long Flow(LedgerEntry e, int day, ReportTotals into)
    {
        (ReportMetric up, ReportMetric down) = e.Kind switch
        {
            LedgerEntryKind.Adjust => (ReportMetric.IssuedAdjustments, ReportMetric.DeductedAdjustments),
            LedgerEntryKind.ReferralReward => (ReportMetric.IssuedReferrals, ReportMetric.Reversed),
            _ => (ReportMetric.MergedIn, ReportMetric.MergedOut),
        };
        long points = e.Points.Value;
        into.Add(e.ProgramId, day, points >= 0 ? up : down, "", Math.Abs(points));
        return points;
    }
}
