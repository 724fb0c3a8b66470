namespace Loyalty;

/// <summary>
/// Birthday rewards (Sephora, Starbucks): once a year, when the member's birthday month begins
/// (program-local, from the profile's <see cref="Profiles.BirthdayField"/>), the due schedule gives
/// it <see cref="BonusPoints"/> and, with <see cref="GiftRewardId"/>, one unit of that reward free
/// to redeem until the month ends.
/// </summary>
/// <param name="BonusPoints">Points given at the start of the birthday month; 0 for none.</param>
/// <param name="GiftRewardId">A catalogue reward the member may redeem once for no points during the month; null for none.</param>
[GenerateSerializer, Immutable]
public sealed record BirthdayPolicy(
    [property: Id(0)] long BonusPoints,
    [property: Id(1)] string? GiftRewardId = null)
{
    /// <summary>Returns null when the policy is valid in <paramref name="settings"/>, otherwise a message naming the field.</summary>
    public string? Check(ProgramSettings settings)
    {
        if (BonusPoints is < 0 or > Limits.BonusPointsMax)
        {
            return $"birthday.bonus_points must be 0..{Limits.BonusPointsMax}";
        }

        if (GiftRewardId is not null && settings.FindReward(GiftRewardId) is null)
        {
            return $"birthday.gift_reward_id '{Bounded.Echo(GiftRewardId)}' is not in the rewards catalogue";
        }

        return BonusPoints == 0 && GiftRewardId is null ? "birthday gives nothing: set bonus_points, gift_reward_id or both" : null;
    }
}

/// <summary>What one birthday gave: the year, and the gift and until when it may be redeemed.</summary>
[GenerateSerializer, Immutable]
public sealed record BirthdayGrant(
    [property: Id(0)] int Year,
    [property: Id(1)] string? GiftRewardId,
    [property: Id(2)] DateTimeOffset GiftUntil);
