namespace Loyalty;

/// <summary>Where a member's paid membership stands.</summary>
public enum MembershipStatus
{
    /// <summary>Never a member of a plan.</summary>
    None = 0,

    /// <summary>In a free trial until the term ends.</summary>
    Trial = 1,

    /// <summary>Paid up until the term ends; renews when the retailer's billing confirms the next payment.</summary>
    Active = 2,

    /// <summary>Cancelled: the benefits last until the term ends, then the membership lapses.</summary>
    Cancelled = 3,

    /// <summary>The term ended without a renewal.</summary>
    Lapsed = 4,
}

/// <summary>
/// A paid membership plan (Amazon Prime; Lululemon's community membership): a fee per term, an
/// optional free trial, and benefits — an earn multiplier, perks, early access, and campaigns and
/// rewards reserved to the plan's members. The engine takes no payments: the retailer's billing
/// confirms each one (<see cref="MembershipPayment"/>), and a term not renewed lapses on time.
/// </summary>
/// <param name="Id">The plan's id.</param>
/// <param name="Name">Its name for people.</param>
/// <param name="FeeMinor">The fee per term, in the program currency's minor units.</param>
/// <param name="TermMonths">The term a payment buys, in calendar months.</param>
/// <param name="TrialDays">A free trial's length, once per member and plan; 0 for none.</param>
/// <param name="MultiplierBp">The plan's earn multiplier on the basket points (10000 is x1).</param>
/// <param name="Perks">Perks clients show.</param>
/// <param name="EarlyAccess">Members get early access (to sales, launches), as a flag clients read.</param>
[GenerateSerializer, Immutable]
public sealed record MembershipPlan(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] long FeeMinor,
    [property: Id(3)] int TermMonths,
    [property: Id(4)] int TrialDays = 0,
    [property: Id(5)] int MultiplierBp = Multipliers.One,
    [property: Id(6)] IReadOnlyList<string>? Perks = null,
    [property: Id(7)] bool EarlyAccess = false)
{
    /// <summary>Perks, never null.</summary>
    public IReadOnlyList<string> PerkList => Perks ?? [];

    /// <summary>Returns null when the plan is valid, otherwise a message naming the field under <paramref name="field"/>.</summary>
    public string? Check(string field)
    {
        if ((LoyaltyIds.Check(Id, field + ".id", Limits.CodeLengthMax) ?? FreeText.Check(Name, field + ".name", Limits.NameLengthMax)) is { } error)
        {
            return error;
        }

        if (FeeMinor is < 0 or > Limits.MembershipFeeMinorMax)
        {
            return $"{field}.fee_minor must be 0..{Limits.MembershipFeeMinorMax}";
        }

        if (TermMonths is < 1 or > Limits.MembershipTermMonthsMax || TrialDays is < 0 or > Limits.MembershipTrialDaysMax)
        {
            return $"{field} needs term_months 1..{Limits.MembershipTermMonthsMax} and trial_days 0..{Limits.MembershipTrialDaysMax}";
        }

        if (MultiplierBp is < Multipliers.One or > Multipliers.Max)
        {
            return $"{field}.multiplier_bp must be {Multipliers.One}..{Multipliers.Max} (10000 is x1)";
        }

        return FreeText.CheckList(PerkList, field + ".perks", Limits.PerksMax, Limits.NameLengthMax);
    }
}

/// <summary>A payment for a membership plan, confirmed by the retailer's billing; idempotent by its id.</summary>
/// <param name="PaymentId">Billing's transaction id (shares the program's transaction ids).</param>
/// <param name="PlanId">The plan paid for.</param>
/// <param name="Amount">The money paid: the plan's fee, in the program's currency.</param>
[GenerateSerializer, Immutable]
public sealed record MembershipPayment(
    [property: Id(0)] string PaymentId,
    [property: Id(1)] string PlanId,
    [property: Id(2)] Money Amount)
{
    /// <summary>Returns null when well formed, otherwise a message naming the field.</summary>
    public string? Check() =>
        LoyaltyIds.Check(PaymentId, "payment_id") ?? LoyaltyIds.Check(PlanId, "plan_id", Limits.CodeLengthMax)
        ?? (Amount.AmountMinor is < 0 or > Limits.MembershipFeeMinorMax ? $"amount_minor must be 0..{Limits.MembershipFeeMinorMax}" : null)
        ?? (CurrencyCodes.IsWellFormed(Amount.Currency) ? null : "currency must be a three-letter ISO 4217 code such as USD");

    /// <summary>Identifies the payment's content, to tell a resend from a reuse of its id.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("membership-payment");
        f.Add(PaymentId);
        f.Add(PlanId);
        f.Add(Amount.AmountMinor);
        f.Add(Amount.Currency);
        return f.Value;
    }
}

/// <summary>What a membership entry records: the plan, the term it now runs to, and whether it is a trial.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipChange(
    [property: Id(0)] string PlanId,
    [property: Id(1)] DateTimeOffset TermEndsAt,
    [property: Id(2)] bool Trial = false);

/// <summary>One step of a member's membership history.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipStep(
    [property: Id(0)] LedgerEntryKind Kind,
    [property: Id(1)] string PlanId,
    [property: Id(2)] DateTimeOffset At,
    [property: Id(3)] DateTimeOffset TermEndsAt,
    [property: Id(4)] string? PaymentId,
    [property: Id(5)] long AmountMinor);

/// <summary>A member's membership as queries see it.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipView(
    [property: Id(0)] string PlanId,
    [property: Id(1)] MembershipStatus Status,
    [property: Id(2)] DateTimeOffset StartedAt,
    [property: Id(3)] DateTimeOffset TermEndsAt,
    [property: Id(4)] bool EarlyAccess,
    [property: Id(5)] IReadOnlyList<string> Perks,
    [property: Id(6)] int MultiplierBp,
    [property: Id(7)] IReadOnlyList<MembershipStep> History);

/// <summary>The answer to a membership change.</summary>
[GenerateSerializer, Immutable]
public sealed record MembershipResult(
    [property: Id(0)] MembershipView? Membership,
    [property: Id(1)] AccrualStatus Status,
    [property: Id(2)] long Sequence,
    [property: Id(3)] LoyaltyError Error,
    [property: Id(4)] string? ErrorMessage)
{
    /// <summary>A refusal with the reason.</summary>
    public static MembershipResult Reject(LoyaltyError error, string message) => new(null, AccrualStatus.Rejected, 0, error, message);
}
