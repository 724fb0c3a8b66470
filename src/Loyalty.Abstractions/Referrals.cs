namespace Loyalty;

/// <summary>
/// A program's referral rewards. Both sides are rewarded when the referred member's first
/// qualifying purchase (at least <see cref="MinPurchaseMinor"/>) is accepted, not at sign-up;
/// if that purchase is returned in full, both rewards are reversed.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ReferralPolicy(
    [property: Id(0)] long ReferrerPoints,
    [property: Id(1)] long ReferredPoints,
    [property: Id(2)] long MinPurchaseMinor = 0,
    [property: Id(3)] int CapPerPeriod = 0,
    [property: Id(4)] int PeriodDays = ReferralPolicy.PeriodDaysDefault)
{
    /// <summary>The referral cap's period when the program does not say, in days.</summary>
    public const int PeriodDaysDefault = 30;

    /// <summary>Returns null when the policy is valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (ReferrerPoints is < 0 or > Limits.BonusPointsMax || ReferredPoints is < 0 or > Limits.BonusPointsMax)
        {
            return $"referrals.referrer_points and referrals.referred_points must be 0..{Limits.BonusPointsMax}";
        }

        if (MinPurchaseMinor is < 0 or > Limits.PurchaseAmountMinorMax)
        {
            return $"referrals.min_purchase_minor must be 0..{Limits.PurchaseAmountMinorMax}";
        }

        if (CapPerPeriod is < 0 or > Limits.ReferralsPerMemberMax)
        {
            return $"referrals.cap_per_period must be 0..{Limits.ReferralsPerMemberMax} (0 for no cap)";
        }

        return PeriodDays is < 1 or > Limits.ReferralPeriodDaysMax ? $"referrals.period_days must be 1..{Limits.ReferralPeriodDaysMax}" : null;
    }
}

/// <summary>The member a referral code belongs to.</summary>
[GenerateSerializer, Immutable]
public sealed record ReferralOwner(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] string MemberId);

/// <summary>Referral codes: short, shareable, the same for a member every time it is asked.</summary>
public static class ReferralCodes
{
    /// <summary>Characters of a code: Crockford's base 32, without the letters people confuse (I, L, O, U).</summary>
    private const string Alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    /// <summary>Characters in a code.</summary>
    public const int Length = 8;

    /// <summary>
    /// The key of code <paramref name="code"/>'s grain in program <paramref name="programId"/>:
    /// codes are kept per program, so that no program's members can take, or find out about,
    /// another program's codes (the codes are a public hash of program and member).
    /// </summary>
    public static string Key(string programId, string code) => programId + "/" + code;

    /// <summary>
    /// The member's code for attempt <paramref name="salt"/>: a hash of program and member, so the
    /// code says nothing about either. A taken code (another member's, by a rare collision) is
    /// skipped by trying the next salt.
    /// </summary>
    public static string For(string programId, string memberId, int salt)
    {
        var f = new Fingerprint();
        f.Add("referral");
        f.Add(programId);
        f.Add(memberId);
        f.Add(salt);
        ulong bits = unchecked((ulong)f.Value);
        Span<char> code = stackalloc char[Length];
        for (int i = 0; i < Length; i++)
        {
            code[i] = Alphabet[(int)(bits & 31)];
            bits >>= 5;
        }

        return new string(code);
    }

    /// <summary>The code as stored (upper case), or null with a message when it cannot be a code.</summary>
    public static string? Normalize(string? code, out string? error)
    {
        string upper = (code ?? "").Trim().ToUpperInvariant();
        error = upper.Length == Length && upper.All(c => Alphabet.Contains(c, StringComparison.Ordinal))
            ? null
            : $"referral_code must be {Length} characters of {Alphabet}";
        return error is null ? upper : null;
    }
}
