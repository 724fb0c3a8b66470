namespace Loyalty;

/// <summary>
/// Everything one member hands to another when two accounts are merged: spendable lots with their
/// expiries, pending points with their dates, the tier, referral links, lifetime totals, the
/// return progress of its purchases (so they can still be returned, never beyond what they earned),
/// the plans whose free trial it had (one trial per person and plan, whichever account took it),
/// its birthday gift not yet redeemed and the year of its last birthday reward (one a year, whichever
/// account took it), the personal bonus days it booked, and the referrals of duplicates merged into it
/// before (<see cref="MergedReferral"/>), its qualifying history for the tier window (so that one
/// person's two accounts qualify together), the expiries of the lots it was already warned about and
/// its shortfall (points a return or a referral's reversal could not take back).
/// Fields after the first ones are null or 0 in merges recorded before they were kept.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MergeTransfer(
    [property: Id(0)] string MemberId,
    [property: Id(1)] long Balance,
    [property: Id(2)] IReadOnlyList<LotUse> Lots,
    [property: Id(3)] IReadOnlyList<PendingLotUse> Pending,
    [property: Id(4)] string Tier,
    [property: Id(5)] DateTimeOffset? TierReviewAt,
    [property: Id(6)] string? ReferredBy,
    [property: Id(7)] IReadOnlyList<string> Referrals,
    [property: Id(8)] long LifetimeEarned,
    [property: Id(9)] long LifetimeRedeemed,
    [property: Id(10)] long LifetimeExpired,
    [property: Id(11)] long LifetimeReversed,
    [property: Id(12)] IReadOnlyList<ReturnedSoFar> Returns,
    [property: Id(13)] long PurchaseCount,
    [property: Id(14)] string? ReferralQualifiedBy = null,
    [property: Id(15)] bool ReferralReversed = false,
    [property: Id(16)] DateTimeOffset LastActivityAt = default,
    [property: Id(17)] ReferralStatus? Referral = null,
    [property: Id(18)] IReadOnlyDictionary<string, long>? ReferralRewards = null,
    [property: Id(19)] IReadOnlyList<string>? MergedFrom = null,
    [property: Id(20)] long GivenMinor = 0,
    [property: Id(21)] long WalletMinor = 0,
    [property: Id(22)] DateTimeOffset? GrantedIntoEmptyAt = null,
    [property: Id(23)] DateTimeOffset? HandedOverAt = null,
    [property: Id(24)] IReadOnlyList<string>? TrialsUsed = null,
    [property: Id(25)] IReadOnlyList<DateTimeOffset>? ReferredAt = null,
    [property: Id(26)] BirthdayGrant? BirthdayGift = null,
    [property: Id(27)] int BirthdayYear = 0,
    [property: Id(28)] IReadOnlyList<int>? BonusDays = null,
    [property: Id(29)] IReadOnlyList<MergedReferral>? MergedReferrals = null,
    [property: Id(30)] IReadOnlyList<QualifyingDayUse>? Qualification = null,
    [property: Id(31)] IReadOnlyList<string>? QualifyingFrom = null,
    [property: Id(32)] IReadOnlyList<DateTimeOffset>? WarnedExpiries = null,
    [property: Id(33)] long Shortfall = 0);

/// <summary>
/// One UTC day of a duplicate's qualifying points and spend, as a merge hands it on: the survivor
/// adds it to its own day, so that a tier is held and reviewed on what both accounts earned.
/// </summary>
/// <param name="Day">The UTC day (DateOnly.DayNumber).</param>
/// <param name="Points">Qualifying points of that day, net of returns.</param>
/// <param name="Spend">Qualifying spend of that day in minor units, net of returns.</param>
[GenerateSerializer, Immutable]
public sealed record QualifyingDayUse(
    [property: Id(0)] int Day,
    [property: Id(1)] long Points,
    [property: Id(2)] long Spend);

/// <summary>
/// A referred member's standing with its referrer, as a merge hands it on: under which member id
/// the referrer recorded the referral, what it is owed, and what is already settled.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ReferralStatus(
    [property: Id(0)] string Subject,
    [property: Id(1)] long RewardOwed,
    [property: Id(2)] bool RewardSettled,
    [property: Id(3)] bool ReversalSettled);

/// <summary>
/// The referral of a duplicate merged into a member that kept its own referrer: who referred the
/// duplicate (<see cref="Referrer"/>, which recorded it under <see cref="Subject"/>) and the
/// purchase that qualified it, now the survivor's to return. A full return of that purchase takes
/// back the referred member's bonus with it, so the referrer's reward is reversed too
/// (<see cref="Reversed"/>), and the referrer told of it (<see cref="ReversalSettled"/>).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MergedReferral(
    [property: Id(0)] string Referrer,
    [property: Id(1)] string Subject,
    [property: Id(2)] string QualifiedBy,
    [property: Id(3)] bool Reversed = false,
    [property: Id(4)] bool ReversalSettled = false)
{
    /// <summary>The referrer still has to hear of the reversal (derived: not written with the record).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool Owed => Reversed && !ReversalSettled;
}

/// <summary>A pending lot as a merge moves it.</summary>
[GenerateSerializer, Immutable]
public sealed record PendingLotUse(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] long Points,
    [property: Id(2)] DateTimeOffset AvailableAt,
    [property: Id(3)] DateTimeOffset? ExpiresAt);

/// <summary>How much of one purchase had been returned when a merge moved it.</summary>
[GenerateSerializer, Immutable]
public sealed record ReturnedSoFar(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] bool ByLines,
    [property: Id(2)] long AmountReturnedMinor,
    [property: Id(3)] IReadOnlyDictionary<string, long> SkuReturnedMinor,
    [property: Id(4)] IReadOnlyList<long> Reversed,
    [property: Id(5)] IReadOnlyDictionary<string, long>? SkuReturnedQuantity = null);

/// <summary>A member's personal fields (name, e-mail, …): kept apart from the ledger, and deleted on erasure.</summary>
public static class Profiles
{
    /// <summary>Returns null when the fields are acceptable, otherwise a message naming the problem.</summary>
    public static string? Check(IReadOnlyDictionary<string, string> fields)
    {
        if (fields.Count > Limits.ProfileFieldsMax)
        {
            return $"profile has more than {Limits.ProfileFieldsMax} fields";
        }

        foreach ((string name, string value) in fields)
        {
            if (LoyaltyIds.Check(name, "profile field name", Limits.CodeLengthMax) is { } error)
            {
                return error;
            }

            if (value.Length > Limits.ProfileValueLengthMax)
            {
                return $"profile field '{name}' is longer than {Limits.ProfileValueLengthMax} characters";
            }

            if (FreeText.HasControl(value))
            {
                return $"profile field '{name}' may not contain control characters";
            }
        }

        return fields.TryGetValue(BirthdayField, out string? birthday) && BirthMonthOf(birthday) == 0
            ? $"profile field '{BirthdayField}' must be YYYY-MM-DD or MM-DD"
            : null;
    }

    /// <summary>The profile field a member's birthday is in (for birthday rewards).</summary>
    public const string BirthdayField = "birthday";

    /// <summary>The month (1..12) of a birthday written YYYY-MM-DD or MM-DD; 0 when it is neither.</summary>
    public static int BirthMonthOf(string? birthday)
    {
        string? monthDay = birthday?.Length switch
        {
            10 when DateOnly.TryParseExact(birthday, "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.None, out _) => birthday[5..],
            5 => birthday,
            _ => null,
        };

        // Month and day are checked against a leap year, so 02-29 is a birthday.
        return monthDay is not null && DateOnly.TryParseExact("2024-" + monthDay, "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.None, out DateOnly day)
            ? day.Month
            : 0;
    }
}
