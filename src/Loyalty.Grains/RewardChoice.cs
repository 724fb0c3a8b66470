namespace Loyalty.Grains;

/// <summary>
/// Which rewards a member can redeem, and why not the others: the same checks, in the same order,
/// as a redemption (plan, window, tier, points, stock), so a till that shows an option as redeemable
/// sees the redemption accepted unless something changes in between.
/// </summary>
public static class RewardChoice
{
    /// <summary>Every reward of <paramref name="catalogue"/>, judged for a member in <paramref name="tier"/> with <paramref name="available"/> points.</summary>
    /// <param name="catalogue">The program's rewards, in catalogue order.</param>
    /// <param name="tier">The member's tier now.</param>
    /// <param name="available">Points the member can spend: balance less held (never below 0 for this purpose).</param>
    /// <param name="now">The moment judged.</param>
    /// <param name="taken">Units taken so far of rewards with stock, by reward id; a reward missing here counts as none taken.</param>
    /// <param name="gift">The reward of the member's open birthday gift (one unit for no points); null for none.</param>
    /// <param name="plan">The membership plan whose benefits the member has; null for none.</param>
    public static IReadOnlyList<RewardOption> Options(IReadOnlyList<Reward> catalogue, string tier, long available, DateTimeOffset now, IReadOnlyDictionary<string, long> taken, string? gift = null, string? plan = null)
    {
        var options = new RewardOption[catalogue.Count];
        for (int i = 0; i < catalogue.Count; i++)
        {
            options[i] = Judge(catalogue[i], tier, plan, Math.Max(0, available), now, taken.GetValueOrDefault(catalogue[i].Id), catalogue[i].Id == gift);
        }

        return options;
    }

    private static RewardOption Judge(Reward reward, string tier, string? plan, long available, DateTimeOffset now, long taken, bool gift)
    {
        long? left = reward.Stock is { } stock ? Math.Max(0, stock - taken) : null;
        long affordable = (available / reward.PointsPrice) + (gift ? 1 : 0);
        int units = (int)Math.Min(Math.Min(affordable, left ?? long.MaxValue), Limits.RedeemQuantityMax);
        long pointsShort = gift ? 0 : Math.Max(0, reward.PointsPrice - available);
        (RewardBlock block, string? reason) = reward switch
        {
            _ when reward.PlanList.Count > 0 && (plan is null || !reward.PlanList.Contains(plan)) =>
                (RewardBlock.Plan, $"reward '{reward.Id}' is for members of plans {string.Join(", ", reward.PlanList)}"),
            { AvailableFrom: { } from } when now < from => (RewardBlock.NotYet, $"reward '{reward.Id}' is available from {from:O}"),
            { AvailableUntil: { } until } when now >= until => (RewardBlock.Ended, $"reward '{reward.Id}' was available until {until:O}"),
            _ when reward.TierList.Count > 0 && !reward.TierList.Contains(tier) =>
                (RewardBlock.Tier, $"reward '{reward.Id}' is for tiers {string.Join(", ", reward.TierList)}; the member is {tier}"),
            _ when pointsShort > 0 => (RewardBlock.Points, $"the member has {available} points available; '{reward.Id}' needs {reward.PointsPrice}"),
            _ when left == 0 => (RewardBlock.OutOfStock, $"reward '{reward.Id}' is out of stock"),
            _ => (RewardBlock.None, null),
        };
        return new RewardOption(reward, block, reason, pointsShort, block == RewardBlock.None ? units : 0, left);
    }
}
