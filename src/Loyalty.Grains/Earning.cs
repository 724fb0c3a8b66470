using System.Runtime.CompilerServices;

namespace Loyalty.Grains;

/// <summary>What a member has already earned, as the earn caps read it.</summary>
public interface IEarnHistory
{
    /// <summary>Points the member already has from a campaign, by campaign id.</summary>
    long CampaignEarned(string campaignId);

    /// <summary>Points the member already earned on a program-local day (DayNumber).</summary>
    long EarnedOnDay(int day);

    /// <summary>Points the member already earned in a program-local month (year * 12 + month - 1).</summary>
    long EarnedInMonth(int month);

    /// <summary>Whether the member booked the program-local day (DayNumber) as a personal bonus day.</summary>
    bool IsBonusDay(int day);
}

/// <summary>What the earn rules need to know about the member at the moment of a purchase.</summary>
/// <param name="Tier">The member's tier (after any review that was due).</param>
/// <param name="Flags">The member's flags.</param>
/// <param name="History">What the member already earned (the member's state itself: no delegate per member).</param>
/// <param name="Plan">The membership plan whose benefits the member has now; null for none.</param>
public readonly record struct EarnContext(
    TierDefinition Tier,
    IReadOnlyCollection<string> Flags,
    IEarnHistory History,
    MembershipPlan? Plan = null)
{
    /// <inheritdoc cref="IEarnHistory.CampaignEarned"/>
    public long CampaignEarned(string campaignId) => History.CampaignEarned(campaignId);

    /// <inheritdoc cref="IEarnHistory.EarnedOnDay"/>
    public long EarnedOnDay(int day) => History.EarnedOnDay(day);

    /// <inheritdoc cref="IEarnHistory.EarnedInMonth"/>
    public long EarnedInMonth(int month) => History.EarnedInMonth(month);
}

/// <summary>The points a purchase earns and why.</summary>
/// <param name="Total">The points earned.</param>
/// <param name="BasketPoints">The part of them from the basket components.</param>
/// <param name="Components">The parts of the earn.</param>
/// <param name="CapsHit">Caps that cut the earn.</param>
/// <param name="CappedPoints">Points the caps removed.</param>
/// <param name="EarnDay">The program-local day the purchase counts in.</param>
/// <param name="EarnMonth">The program-local month the purchase counts in.</param>
/// <param name="Lines">The money per SKU, with the multiplier it earned at; null without line items.</param>
/// <param name="ReferrerReward">The referrer's reward this purchase qualifies for, if any.</param>
/// <remarks>A purchase's ledger entry holds these parts in its details, set together with the tier decision and the expiry (MemberGrain.StageAccrual).</remarks>
public readonly record struct EarnResult(
    Points Total,
    Points BasketPoints,
    IReadOnlyList<BreakdownComponent> Components,
    IReadOnlyList<string> CapsHit,
    long CappedPoints,
    int EarnDay,
    int EarnMonth,
    IReadOnlyList<SkuAmount>? Lines,
    long ReferrerReward = 0);

/// <summary>
/// The earn rules, applied in a fixed order so the same purchase under the same program version
/// and member state always earns the same points:
/// <list type="number">
/// <item>Basket points. With line items, each line earns amount x rate x its product multiplier:
/// a SKU rule beats a category rule, an excluded line earns nothing, a line without a rule earns
/// at x1; lines are grouped into one component per rule (and "base" for the rest). Without line
/// items the total earns at x1.</item>
/// <item>Bonuses on the exact (unrounded) basket points: the tier multiplier, each flag rule the
/// member holds or the tender names, and each campaign that applies (its multiplier and its fixed
/// bonus). Multipliers stack by adding: x2 and x1.5 together give basket x (1 + 1 + 0.5).</item>
/// <item>Each component is rounded on its own by the program's rounding rule; the total is the
/// sum of the rounded components.</item>
/// <item>Caps: a campaign gives a member at most its cap in total; then the daily and monthly
/// earn caps trim the total, taking bonuses before basket points, the last component first.</item>
/// </list>
/// </summary>
public static class Earning
{
    /// <summary>Baskets of up to this many lines are grouped on the stack.</summary>
    private const int StackLinesMax = 32;

    /// <summary>Applies the rules of <paramref name="settings"/> to <paramref name="purchase"/>.</summary>
    public static EarnResult Compute(Purchase purchase, ProgramSettings settings, EarnContext member)
    {
        CompiledRules rules = CompiledRules.For(settings);
        DateTime local = TimeZoneInfo.ConvertTime(purchase.OccurredAt, rules.Zone).DateTime;
        int day = DateOnly.FromDateTime(local).DayNumber;
        int month = checked((local.Year * 12) + local.Month - 1);

        var components = new List<BreakdownComponent>(4);
        // Made only when a cap cuts the earn, which most purchases never meet.
        List<string>? capsHit = null;
        decimal basket = AddBasket(purchase, settings, rules, components, out IReadOnlyList<SkuAmount>? lines);
        int basketCount = components.Count;
        AddMultiplier(components, ComponentKind.Tier, member.Tier.Name, member.Tier.MultiplierBp, basket, settings.Rounding);
        // Loops by index here: a foreach over a list's interface boxes its enumerator on every purchase.
        for (int i = 0; i < settings.FlagRuleList.Count; i++)
        {
            FlagRule flag = settings.FlagRuleList[i];
            if (member.Flags.Contains(flag.Flag) || purchase.Tender == flag.Flag)
            {
                AddMultiplier(components, ComponentKind.Flag, flag.Flag, flag.MultiplierBp, basket, settings.Rounding);
            }
        }

        if (member.Plan is { } plan)
        {
            AddMultiplier(components, ComponentKind.Membership, plan.Id, plan.MultiplierBp, basket, settings.Rounding);
        }

        long cappedByCampaigns = 0;
        int campaignsFrom = components.Count;
        for (int i = 0; i < settings.CampaignList.Count; i++)
        {
            Campaign campaign = settings.CampaignList[i];
            if (Applies(campaign, purchase, local, member))
            {
                cappedByCampaigns += AddCampaign(components, ref capsHit, campaign, basket, settings.Rounding, member.CampaignEarned(campaign.Id));
            }
        }

        if (settings.BonusDays is { } bonusDays && member.History.IsBonusDay(day)
            && AddBonusDay(components, campaignsFrom, capsHit, bonusDays, DateOnly.FromDayNumber(day), basket, settings.Rounding))
        {
            cappedByCampaigns = 0;
        }

        long beforeCaps = EntryDetails.Total(components, components.Count);
        long allowed = Allowed(beforeCaps, settings.DailyEarnCapPoints, member.EarnedOnDay(day), "daily", ref capsHit);
        allowed = Allowed(allowed, settings.MonthlyEarnCapPoints, member.EarnedInMonth(month), "monthly", ref capsHit);
        Trim(components, beforeCaps - allowed);
        long basketPoints = EntryDetails.Total(components, basketCount);
        return new EarnResult(new Points(allowed), new Points(basketPoints), components, capsHit ?? (IReadOnlyList<string>)[],
            checked(beforeCaps - allowed + cappedByCampaigns), day, month, lines);
    }

    /// <summary>
    /// Adds the bonus day's extra points. Under <see cref="BonusDayStacking.Larger"/> they replace
    /// the campaigns' components (from <paramref name="campaignsFrom"/>) when larger, and are left
    /// out otherwise; returns true when the campaigns' components were replaced.
    /// </summary>
    private static bool AddBonusDay(List<BreakdownComponent> components, int campaignsFrom, List<string>? capsHit, BonusDayPolicy policy, DateOnly day, decimal basket, Rounding rounding)
    {
        long points = Round(basket * (policy.MultiplierBp - Multipliers.One) / Multipliers.One, rounding);
        var component = new BreakdownComponent(ComponentKind.BonusDay, day.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), points);
        if (policy.Stacking == BonusDayStacking.Stack)
        {
            components.Add(component);
            return false;
        }

        long campaigns = EntryDetails.Total(components, components.Count) - EntryDetails.Total(components, campaignsFrom);
        if (points <= campaigns)
        {
            return false;
        }

        components.RemoveRange(campaignsFrom, components.Count - campaignsFrom);
        capsHit?.RemoveAll(c => c.StartsWith("campaign:", StringComparison.Ordinal));
        components.Add(component);
        return true;
    }

    /// <summary>Rounds exact points to whole points by the program's rule.</summary>
    public static long Round(decimal points, Rounding rounding) => rounding switch
    {
        Rounding.Down => (long)decimal.Truncate(points),
        Rounding.HalfUp => (long)decimal.Round(points, MidpointRounding.AwayFromZero),
        Rounding.Up => (long)decimal.Ceiling(points),
        _ => throw new ArgumentOutOfRangeException(nameof(rounding), rounding, "Unknown rounding rule."),
    };

    /// <summary>Whether a campaign applies to the purchase, by time, channel, tier, flags and spend.</summary>
    public static bool Applies(Campaign campaign, Purchase purchase, DateTime local, EarnContext member)
    {
        if (purchase.OccurredAt < campaign.StartsAt || purchase.OccurredAt >= campaign.EndsAt)
        {
            return false;
        }

        if (campaign.Weekdays.Count > 0 && !campaign.Weekdays.Contains(local.DayOfWeek))
        {
            return false;
        }

        bool allDay = campaign.HourFrom == 0 && campaign.HourTo is 0 or 24;
        if (!allDay && (local.Hour < campaign.HourFrom || local.Hour >= campaign.HourTo))
        {
            return false;
        }

        if (campaign.Channels.Count > 0 && !campaign.Channels.Contains(purchase.Channel))
        {
            return false;
        }

        if (campaign.Tiers.Count > 0 && !campaign.Tiers.Contains(member.Tier.Name))
        {
            return false;
        }

        if (campaign.Flags.Count > 0 && !campaign.Flags.Any(f => member.Flags.Contains(f) || purchase.Tender == f))
        {
            return false;
        }

        if (campaign.PlanList.Count > 0 && (member.Plan is null || !campaign.PlanList.Contains(member.Plan.Id)))
        {
            return false;
        }

        return purchase.Amount.AmountMinor >= campaign.MinSpendMinor;
    }

    /// <summary>Adds one component per product-rule group and returns the exact basket points.</summary>
    private static decimal AddBasket(Purchase purchase, ProgramSettings settings, CompiledRules rules, List<BreakdownComponent> components, out IReadOnlyList<SkuAmount>? lines)
    {
        decimal perMinor = (decimal)settings.EarnPointsPerUnit / Money.MinorPerUnit(settings.CurrencyExponent);
        if (purchase.LineItems.Count == 0)
        {
            lines = null;
            decimal points = purchase.Amount.AmountMinor * perMinor;
            components.Add(new BreakdownComponent(ComponentKind.Base, "base", Round(points, settings.Rounding)));
            return points;
        }

        // Group the lines by the rule that decides them, keeping the rules' configured order, and
        // sum the money per SKU and component. Baskets are small, so a linear merge is cheaper
        // than hashing (this runs for every purchase).
        int count = purchase.LineItems.Count;
        Span<(int Index, long AmountMinor)> groups = count <= StackLinesMax ? stackalloc (int, long)[StackLinesMax] : new (int, long)[count];
        int groupCount = 0;
        // One per distinct SKU and component; a basket rarely repeats a SKU, so the array is made
        // for every line and cut down only when one does.
        var skus = new SkuAmount[count];
        int skuCount = 0;
        for (int i = 0; i < count; i++)
        {
            LineItem line = purchase.LineItems[i];
            int index = rules.Match(line);
            AddTo(groups, ref groupCount, index, line.AmountMinor);
            AddTo(skus, ref skuCount, line.Sku, rules.CodeAt(index), rules.MultiplierAt(index), line.AmountMinor, line.Quantity);
        }

        groups[..groupCount].Sort(static (a, b) => a.Index.CompareTo(b.Index));
        lines = skuCount == count ? skus : skus[..skuCount];
        decimal basket = 0;
        foreach ((int index, long amountMinor) in groups[..groupCount])
        {
            decimal points = amountMinor * perMinor * rules.MultiplierAt(index) / Multipliers.One;
            basket += points;
            components.Add(new BreakdownComponent(index < 0 ? ComponentKind.Base : ComponentKind.Product, rules.CodeAt(index), Round(points, settings.Rounding)));
        }

        return basket;
    }

    private static void AddTo(Span<(int Index, long AmountMinor)> groups, ref int groupCount, int index, long amountMinor)
    {
        for (int i = 0; i < groupCount; i++)
        {
            if (groups[i].Index == index)
            {
                groups[i].AmountMinor = checked(groups[i].AmountMinor + amountMinor);
                return;
            }
        }

        groups[groupCount++] = (index, amountMinor);
    }

    private static void AddTo(SkuAmount[] skus, ref int skuCount, string sku, string component, int multiplierBp, long amountMinor, int quantity)
    {
        for (int i = 0; i < skuCount; i++)
        {
            if (skus[i].Sku == sku && skus[i].Component == component)
            {
                skus[i] = skus[i] with { AmountMinor = checked(skus[i].AmountMinor + amountMinor), Quantity = checked(skus[i].Quantity + quantity) };
                return;
            }
        }

        skus[skuCount++] = new SkuAmount(sku, amountMinor, multiplierBp, component, quantity);
    }

    private static void AddMultiplier(List<BreakdownComponent> components, ComponentKind kind, string code, int multiplierBp, decimal basket, Rounding rounding)
    {
        if (multiplierBp > Multipliers.One)
        {
            components.Add(new BreakdownComponent(kind, code, Round(basket * (multiplierBp - Multipliers.One) / Multipliers.One, rounding)));
        }
    }

    /// <summary>Adds the campaign's component and returns the points its cap removed.</summary>
    private static long AddCampaign(List<BreakdownComponent> components, ref List<string>? capsHit, Campaign campaign, decimal basket, Rounding rounding, long earnedBefore)
    {
        decimal extra = campaign.MultiplierBp > Multipliers.One ? basket * (campaign.MultiplierBp - Multipliers.One) / Multipliers.One : 0;
        long uncapped = checked(Round(extra, rounding) + campaign.BonusPoints);
        long points = uncapped;
        if (campaign.CapPoints > 0 && checked(earnedBefore + points) > campaign.CapPoints)
        {
            points = Math.Max(0, campaign.CapPoints - earnedBefore);
            (capsHit ??= []).Add("campaign:" + campaign.Id);
        }

        components.Add(new BreakdownComponent(ComponentKind.Campaign, campaign.Id, points));
        return uncapped - points;
    }

    private static long Allowed(long points, long capPoints, long earnedBefore, string cap, ref List<string>? capsHit)
    {
        if (capPoints <= 0 || checked(earnedBefore + points) <= capPoints)
        {
            return points;
        }

        (capsHit ??= []).Add(cap);
        return Math.Max(0, capPoints - earnedBefore);
    }

    /// <summary>Removes <paramref name="excess"/> points, last component first.</summary>
    private static void Trim(List<BreakdownComponent> components, long excess)
    {
        for (int i = components.Count - 1; i >= 0 && excess > 0; i--)
        {
            long cut = Math.Min(excess, components[i].Points);
            components[i] = components[i] with { Points = components[i].Points - cut };
            excess -= cut;
        }
    }
}

/// <summary>A program's rules indexed for the hot path; built once per settings instance.</summary>
internal sealed class CompiledRules
{
    private static readonly ConditionalWeakTable<ProgramSettings, CompiledRules> Cache = [];
    private readonly Dictionary<string, int> _bySku = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _byCategory = new(StringComparer.Ordinal);
    private readonly IReadOnlyList<ProductRule> _rules;
    private readonly string[] _codes;

    private CompiledRules(ProgramSettings settings)
    {
        Zone = settings.Zone;
        _rules = settings.ProductRuleList;
        _codes = [.. _rules.Select(r => r.Code)];
        for (int i = 0; i < _rules.Count; i++)
        {
            if (_rules[i].Sku is { } sku)
            {
                _bySku[sku] = i;
            }
            else
            {
                _byCategory[_rules[i].Category!] = i;
            }
        }
    }

    public TimeZoneInfo Zone { get; }

    public static CompiledRules For(ProgramSettings settings) => Cache.GetValue(settings, static s => new CompiledRules(s));

    /// <summary>The position of the rule deciding a line (SKU before category); -1 for none.</summary>
    public int Match(LineItem line) =>
        _bySku.TryGetValue(line.Sku, out int i) || (line.Category.Length > 0 && _byCategory.TryGetValue(line.Category, out i)) ? i : -1;

    /// <summary>The breakdown code of the rule at <paramref name="index"/>; "base" for none.</summary>
    public string CodeAt(int index) => index < 0 ? "base" : _codes[index];

    /// <summary>The multiplier the rule at <paramref name="index"/> gives, in basis points; x1 for none.</summary>
    public int MultiplierAt(int index) => index < 0 ? Multipliers.One : _rules[index].EffectiveMultiplierBp;
}
