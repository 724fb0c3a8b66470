namespace Loyalty.Grains;

/// <summary>
/// A purchase's earn: the checks that refuse it, then its points (the earn rules, the referral
/// reward of a first qualifying purchase), the tier it moves the member to, its lot's expiry and
/// pending time, its share to a cause and the store credit it spends, all in one entry.
/// </summary>
public static class AccrualDecision
{
    /// <summary>
    /// With a daily earn cap, how many days back a purchase may be dated: the days of cap history a
    /// member keeps (<see cref="EarnHistory.CapDaysKept"/>, counted back from its newest), less a
    /// day for a till's clock ahead across midnight and one for the program's time zone. An older
    /// day is no longer known, and its cap would be granted afresh.
    /// </summary>
    public const int DailyCapBackdateDaysMax = EarnHistory.CapDaysKept - 2;

    /// <summary>
    /// With a monthly earn cap, how many months back a purchase may be dated: the months of cap
    /// history a member keeps (<see cref="EarnHistory.CapMonthsKept"/>), less two for the same
    /// reasons. The default back-dating limit (365 days) is within it.
    /// </summary>
    public const int MonthlyCapBackdateMonthsMax = EarnHistory.CapMonthsKept - 2;

    /// <summary>
    /// The refusal of a purchase the member's state or the program rules out (currency,
    /// back-dating, store credit), or null when it may be earned. Checked before any redemption
    /// it carries is decided, so that its own reason is the one named.
    /// </summary>
    public static Decision? Check(in Decider d, Purchase purchase)
    {
        ProgramSettings settings = d.Settings;
        if (purchase.Amount.Currency != settings.Currency)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"currency '{purchase.Amount.Currency}' does not match the program's currency '{settings.Currency}'");
        }

        if (settings.RefusesBackdated(purchase.OccurredAt, d.Now) is { } tooOld)
        {
            return Decision.Refuse(LoyaltyError.InvalidArgument, tooOld);
        }

        if (settings.DailyEarnCapPoints > 0 && purchase.OccurredAt < d.Now - TimeSpan.FromDays(DailyCapBackdateDaysMax))
        {
            return Decision.Refuse(LoyaltyError.InvalidArgument,
                $"occurred_at is more than {DailyCapBackdateDaysMax} days in the past: a program with a daily earn cap (daily_earn_cap_points) takes purchases at most that old");
        }

        if (settings.MonthlyEarnCapPoints > 0 && purchase.OccurredAt < d.Now.AddMonths(-MonthlyCapBackdateMonthsMax))
        {
            return Decision.Refuse(LoyaltyError.InvalidArgument,
                $"occurred_at is more than {MonthlyCapBackdateMonthsMax} months in the past: a program with a monthly earn cap (monthly_earn_cap_points) takes purchases at most that old");
        }

        return purchase.WalletMinor > d.State.WalletMinor
            ? Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"wallet_minor {purchase.WalletMinor}: the member has {d.State.WalletMinor} minor units of store credit")
            : null;
    }

    /// <summary>
    /// The earn entry of a purchase that passed <see cref="Check"/>; <paramref name="before"/> is the
    /// entry decided with it and written just before it, in the same commit group, or null: its
    /// basket's redemption, or the tier review due by now (<see cref="DueDecision.ReviewBefore"/>),
    /// whose outcome this entry then starts from rather than records again.
    /// </summary>
    public static LedgerEntry Decide(in Decider d, Purchase purchase, long fingerprint, LedgerEntry? before)
    {
        MemberState state = d.State;
        ProgramSettings settings = d.Settings;
        TierLadder ladder = settings.Ladder;
        int indexBefore = ladder.IndexOf(state.Tier);
        (int reviewed, DateTimeOffset? reviewAt) = Tiering.Review(indexBefore, state.TierReviewAt, ladder, state, d.Now);
        EarnResult earn = WithReferralReward(Earning.Compute(purchase, settings, new EarnContext(
            ladder.Tiers[reviewed], state.Flags, state, settings.FindPlan(state.Membership.PlanForPurchase(purchase.OccurredAt, d.Now)))), purchase, settings, state, d.MemberId);

        // The purchase that crosses a threshold moves the member up at once (it earns at the old tier).
        int after = Tiering.Upgrade(reviewed, ladder, state, d.Now,
            ladder.Basis == TierBasis.Points ? earn.Total.Value : purchase.Amount.AmountMinor);
        if (after > reviewed)
        {
            reviewAt = d.Now.AddDays(ladder.WindowDays);
        }

        (string? Cause, long GivenMinor) giving = GivingRules.OfPurchase(settings.Giving, state.Cause, purchase.Amount.AmountMinor);
        DateTimeOffset? availableAt = settings.PendingUntil(d.Now);
        EarnHistory history = state.Earnings;

        // The details are made once, with every field: this runs for every purchase.
        EarnDetails details = new()
        {
            Components = earn.Components,
            CapsHit = earn.CapsHit,
            CappedPoints = earn.CappedPoints,
            EarnDay = earn.EarnDay,
            EarnMonth = earn.EarnMonth,
            Lines = earn.Lines,
            ReferrerReward = earn.ReferrerReward,
            TierBefore = ladder.Tiers[reviewed].Name,
            TierAfter = ladder.Tiers[after].Name,
            TierReviewAt = after == 0 ? null : reviewAt,
            DowngradedFrom = reviewed < indexBefore && before?.Kind != LedgerEntryKind.TierReviewed ? ladder.Tiers[indexBefore].Name : null,
            ExpiresAt = settings.HasExpiry && earn.Total.Value > 0 ? Decider.LotExpiry(settings, availableAt ?? d.Now) : null,
            RewardId = before?.Kind == LedgerEntryKind.Redeem ? purchase.RedeemRewardId : null,
            Quantity = before?.Kind == LedgerEntryKind.Redeem ? purchase.RedeemQuantity : 0,
            Activity = PurchaseActivity.Flags(history.LastPurchaseDay, history.PurchasesInPeriods, history.PurchaseCount, MemberState.DayOf(d.Now)),
            Cause = giving.Cause,
            GivenMinor = giving.GivenMinor,
            WalletMinor = -purchase.WalletMinor,
        };

        // Made directly, not as a copy of a new entry: this runs for every purchase.
        return new LedgerEntry(
            d.ProgramId, d.MemberId, checked(state.Sequence + (before is null ? 1 : 2)), LedgerEntryKind.Earn, earn.Total, purchase.TransactionId, fingerprint,
            purchase.StoreId, purchase.Amount.AmountMinor, purchase.Amount.Currency, null, null,
            purchase.OccurredAt, d.Now, d.Program.Version, availableAt, details);
    }

    /// <summary>
    /// The referral rewards of a referred member's first qualifying purchase: the member's own as a
    /// component of this earn, the referrer's as an amount it is owed (settled at the referrer).
    /// None when the referrer is one of the member's own accounts (see <see cref="MemberState.ReferredByOwnAccount"/>).
    /// </summary>
    private static EarnResult WithReferralReward(EarnResult earn, Purchase purchase, ProgramSettings settings, MemberState state, string memberId)
    {
        // The own-account check last: it looks through the merged accounts, and only a referred
        // member's qualifying purchase needs it.
        ReferralSide referral = state.Referral;
        if (referral.ReferredBy is not { } referrer || referral.QualifiedBy is not null
            || settings.Referrals is not { } policy || policy.ReferrerPoints + policy.ReferredPoints == 0
            || purchase.Amount.AmountMinor < policy.MinPurchaseMinor || state.ReferredByOwnAccount(memberId))
        {
            return earn;
        }

        return earn with
        {
            Total = earn.Total + new Points(policy.ReferredPoints),
            Components = policy.ReferredPoints > 0
                ? [.. earn.Components, new BreakdownComponent(ComponentKind.Referral, "referral:" + referrer, policy.ReferredPoints)]
                : earn.Components,
            ReferrerReward = policy.ReferrerPoints,
        };
    }
}
