namespace Loyalty;

/// <summary>
/// Everything an administrator sets on a program (retailer). Every change is a new version; a
/// purchase earns under the version current when it is applied, and its ledger entry records
/// that version.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ProgramSettings(
    [property: Id(0)] string Name,
    [property: Id(1)] string Currency,
    [property: Id(2)] int CurrencyExponent,
    [property: Id(3)] long EarnPointsPerUnit,
    [property: Id(4)] Rounding Rounding = Rounding.Down,
    [property: Id(5)] string TimeZone = "UTC",
    [property: Id(6)] int PendingDays = 0,
    [property: Id(7)] NegativeBalancePolicy NegativeBalance = NegativeBalancePolicy.AllowNegative,
    [property: Id(8)] long SignupBonusPoints = 0,
    [property: Id(9)] long DailyEarnCapPoints = 0,
    [property: Id(10)] long MonthlyEarnCapPoints = 0,
    [property: Id(11)] IReadOnlyList<ProductRule>? ProductRules = null,
    [property: Id(12)] IReadOnlyList<FlagRule>? FlagRules = null,
    [property: Id(13)] IReadOnlyList<Campaign>? Campaigns = null,
    [property: Id(14)] TierLadder? Tiers = null,
    [property: Id(15)] ExpiryPolicy? Expiry = null,
    [property: Id(16)] IReadOnlyList<Reward>? Rewards = null,
    [property: Id(17)] int ReservationHoldSeconds = ProgramSettings.ReservationHoldSecondsDefault,
    [property: Id(18)] ReferralPolicy? Referrals = null,
    [property: Id(19)] int MaxBackdateDays = ProgramSettings.MaxBackdateDaysDefault,
    [property: Id(20)] AccountingPolicy? Accounting = null,
    [property: Id(21)] long FeedbackRewardPoints = 0,
    [property: Id(22)] BonusDayPolicy? BonusDays = null,
    [property: Id(23)] GivingPolicy? Giving = null,
    [property: Id(24)] BirthdayPolicy? Birthday = null,
    [property: Id(25)] IReadOnlyList<MembershipPlan>? MembershipPlans = null,
    [property: Id(26)] TradeInPolicy? TradeIn = null)
{
    /// <summary>The membership plans, never null.</summary>
    public IReadOnlyList<MembershipPlan> PlanList => MembershipPlans ?? [];

    /// <summary>The plan with this id, or null.</summary>
    public MembershipPlan? FindPlan(string? id)
    {
        // A loop, not a lambda: the lambda's closure over the id was made on every call (every
        // purchase asks), even for a member without a plan.
        if (id is not null)
        {
            for (int i = 0; i < PlanList.Count; i++)
            {
                if (PlanList[i].Id == id)
                {
                    return PlanList[i];
                }
            }
        }

        return null;
    }

    /// <summary>How long a reservation holds points when the program does not say.</summary>
    public const int ReservationHoldSecondsDefault = 900;

    /// <summary>How many days back a purchase or return may be dated when the program does not say.</summary>
    public const int MaxBackdateDaysDefault = 365;

    /// <summary>
    /// Why a purchase or return dated <paramref name="occurredAt"/> is too old to take at
    /// <paramref name="now"/>, or null. Replaying old history is a mistake or an attack; an import
    /// of history would be its own, explicit path.
    /// </summary>
    public string? RefusesBackdated(DateTimeOffset occurredAt, DateTimeOffset now) =>
        occurredAt < now - TimeSpan.FromDays(BackdateDays)
            ? $"occurred_at is more than {BackdateDays} days in the past (the program's max_backdate_days)"
            : null;

    /// <summary>
    /// <see cref="MaxBackdateDays"/>, or the default for settings stored before the field existed
    /// (Orleans' serializer leaves a missing field at 0, which would refuse every purchase).
    /// </summary>
    public int BackdateDays => MaxBackdateDays > 0 ? MaxBackdateDays : MaxBackdateDaysDefault;

    /// <summary>The rewards catalogue, never null.</summary>
    public IReadOnlyList<Reward> RewardList => Rewards ?? [];

    /// <summary>The expiry policy; points never expire when none is configured.</summary>
    public ExpiryPolicy ExpiryRules => Expiry ?? NoExpiry;

    /// <summary>Whether lots can expire, by age or by inactivity.</summary>
    public bool HasExpiry => Expiry is { } e && (e.Mode != ExpiryMode.None || e.InactivityMonths > 0);

    /// <summary>The reward with this id, or null.</summary>
    public Reward? FindReward(string id)
    {
        foreach (Reward reward in RewardList)
        {
            if (reward.Id == id)
            {
                return reward;
            }
        }

        return null;
    }

    private static readonly ExpiryPolicy NoExpiry = new(ExpiryMode.None, 0);

    /// <summary>Product rules, never null.</summary>
    public IReadOnlyList<ProductRule> ProductRuleList => ProductRules ?? [];

    /// <summary>Flag rules, never null.</summary>
    public IReadOnlyList<FlagRule> FlagRuleList => FlagRules ?? [];

    /// <summary>Campaigns, never null.</summary>
    public IReadOnlyList<Campaign> CampaignList => Campaigns ?? [];

    /// <summary>The tier ladder; the single "standard" tier when none is configured.</summary>
    public TierLadder Ladder => Tiers ?? TierLadder.Default;

    /// <summary>The program's time zone, for calendar days, campaign hours and earn caps.</summary>
    public TimeZoneInfo Zone => TimeZoneInfo.FindSystemTimeZoneById(TimeZone);

    /// <summary>
    /// When points earned at <paramref name="now"/> become spendable, or null when at once: as
    /// the local date <see cref="PendingDays"/> + 1 dates after the purchase's begins (a purchase
    /// on 1 March with 14 days: as 16 March begins). Counted in local dates, not 24-hour days, so
    /// a change of daylight saving time in between moves it by that hour. One day's purchases
    /// share one pending lot (per expiry), so a member holds at most one per day of the period
    /// however many purchases it makes.
    /// </summary>
    public DateTimeOffset? PendingUntil(DateTimeOffset now)
    {
        if (PendingDays == 0)
        {
            return null;
        }

        TimeZoneInfo zone = Zone;
        return LocalDay.Begins(TimeZoneInfo.ConvertTime(now, zone).DateTime.AddDays(PendingDays).Date.AddDays(1), zone);
    }

    /// <summary>Returns null when the settings are valid, otherwise a message naming the field.</summary>
    public string? Check() =>
        CheckBasics() ?? CheckProductRules() ?? CheckFlagRules() ?? CheckCampaigns() ?? CheckTiers() ?? CheckRedemption();

    private string? CheckRedemption()
    {
        if ((Expiry?.Check() ?? Referrals?.Check() ?? Accounting?.Check() ?? BonusDays?.Check() ?? Giving?.Check() ?? Birthday?.Check(this) ?? TradeIn?.Check()) is { } policyError)
        {
            return policyError;
        }

        if (MaxBackdateDays is < 1 or > Limits.BackdateDaysMax)
        {
            return $"max_backdate_days must be 1..{Limits.BackdateDaysMax}";
        }

        if (ReservationHoldSeconds is < Limits.ReservationHoldSecondsMin or > Limits.ReservationHoldSecondsMax)
        {
            return $"reservation_hold_seconds must be {Limits.ReservationHoldSecondsMin}..{Limits.ReservationHoldSecondsMax}";
        }

        if (CheckPlans() is { } planError)
        {
            return planError;
        }

        if (RewardList.Count > Limits.RewardsMax)
        {
            return $"rewards has more than {Limits.RewardsMax} entries";
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < RewardList.Count; i++)
        {
            if (RewardList[i].Check($"rewards[{i}]") is { } error)
            {
                return error;
            }

            if (!seen.Add(RewardList[i].Id))
            {
                return $"rewards[{i}] repeats id {RewardList[i].Id}";
            }
        }

        return null;
    }

    private string? CheckBasics()
    {
        if (FreeText.Check(Name, "name", Limits.NameLengthMax) is { } nameError)
        {
            return nameError;
        }

        if (!CurrencyCodes.IsWellFormed(Currency))
        {
            return "currency must be a three-letter ISO 4217 code such as USD";
        }

        if (CurrencyExponent is < 0 or > 4)
        {
            return "currency_exponent must be 0..4";
        }

        if (EarnPointsPerUnit is < 0 or > Limits.EarnPointsPerUnitMax)
        {
            return $"earn_points_per_unit must be 0..{Limits.EarnPointsPerUnitMax}";
        }

        if (!Enum.IsDefined(Rounding))
        {
            return "rounding must be DOWN, HALF_UP or UP";
        }

        if (TimeZone.Length is 0 or > Limits.CodeLengthMax || !TimeZoneInfo.TryFindSystemTimeZoneById(TimeZone, out _))
        {
            return TimeZone.Length > Limits.CodeLengthMax
                ? $"time_zone is longer than {Limits.CodeLengthMax} characters"
                : $"time_zone '{Bounded.Echo(TimeZone)}' is not a known IANA time zone such as Europe/London";
        }

        if (PendingDays is < 0 or > Limits.PendingDaysMax)
        {
            return $"pending_days must be 0..{Limits.PendingDaysMax}";
        }

        // Inactivity is counted from the purchase: points pending that long would expire as they
        // become spendable, never spendable and never warned of.
        if (PendingDays > 0 && Expiry is { InactivityMonths: > 0 } inactive && PendingDays >= inactive.InactivityMonths * ExpiryPolicy.ShortestMonthDays)
        {
            return $"pending_days ({PendingDays}) must be shorter than expiry.inactivity_months ({inactive.InactivityMonths}; {inactive.InactivityMonths * ExpiryPolicy.ShortestMonthDays} days at the least): points would expire for inactivity as they became spendable";
        }

        if (!Enum.IsDefined(NegativeBalance))
        {
            return "negative_balance must be ALLOW_NEGATIVE or FLOOR_AT_ZERO";
        }

        return CheckPoints(SignupBonusPoints, "signup_bonus_points")
            ?? CheckPoints(FeedbackRewardPoints, "feedback_reward_points")
            ?? CheckPoints(DailyEarnCapPoints, "daily_earn_cap_points")
            ?? CheckPoints(MonthlyEarnCapPoints, "monthly_earn_cap_points");
    }

    private string? CheckProductRules()
    {
        if (ProductRuleList.Count > Limits.ProductRulesMax)
        {
            return $"product_rules has more than {Limits.ProductRulesMax} entries";
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < ProductRuleList.Count; i++)
        {
            ProductRule rule = ProductRuleList[i];
            string field = $"product_rules[{i}]";
            if ((rule.Sku is null) == (rule.Category is null))
            {
                return $"{field} must name exactly one of sku or category";
            }

            string? error = LoyaltyIds.Check(rule.Sku ?? rule.Category, field + (rule.Sku is null ? ".category" : ".sku"), Limits.CodeLengthMax);
            if (error is not null)
            {
                return error;
            }

            if (!rule.Exclude && rule.MultiplierBp is < 1 or > Multipliers.Max)
            {
                return $"{field}.multiplier_bp must be 1..{Multipliers.Max} (10000 is x1), or set exclude";
            }

            if (!seen.Add(rule.Code))
            {
                return $"{field} repeats {rule.Code}";
            }
        }

        return null;
    }

    private string? CheckFlagRules()
    {
        if (FlagRuleList.Count > Limits.FlagRulesMax)
        {
            return $"flag_rules has more than {Limits.FlagRulesMax} entries";
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < FlagRuleList.Count; i++)
        {
            FlagRule rule = FlagRuleList[i];
            string? error = LoyaltyIds.Check(rule.Flag, $"flag_rules[{i}].flag", Limits.CodeLengthMax)
                ?? CheckBonusMultiplier(rule.MultiplierBp, $"flag_rules[{i}].multiplier_bp");
            if (error is not null)
            {
                return error;
            }

            if (!seen.Add(rule.Flag))
            {
                return $"flag_rules[{i}] repeats flag {rule.Flag}";
            }
        }

        return null;
    }

    private string? CheckCampaigns()
    {
        if (CampaignList.Count > Limits.CampaignsMax)
        {
            return $"campaigns has more than {Limits.CampaignsMax} entries";
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < CampaignList.Count; i++)
        {
            string? error = CheckCampaign(CampaignList[i], $"campaigns[{i}]");
            if (error is not null)
            {
                return error;
            }

            if (!seen.Add(CampaignList[i].Id))
            {
                return $"campaigns[{i}] repeats id {CampaignList[i].Id}";
            }
        }

        return null;
    }

    private static string? CheckCampaign(Campaign c, string field)
    {
        string? error = LoyaltyIds.Check(c.Id, field + ".id", Limits.CodeLengthMax);
        if (error is not null)
        {
            return error;
        }

        if (c.Name.Length > Limits.NameLengthMax)
        {
            return $"{field}.name is longer than {Limits.NameLengthMax} characters";
        }

        if (FreeText.HasControl(c.Name))
        {
            // Shown on the member's statement in the earn's breakdown.
            return $"{field}.name may not contain control characters";
        }

        if (c.StartsAt == default || c.EndsAt <= c.StartsAt)
        {
            return $"{field} needs starts_at before ends_at";
        }

        if (c.HourFrom is < 0 or > 24 || c.HourTo is < 0 or > 24 || c.HourFrom > c.HourTo)
        {
            return $"{field} hours must satisfy 0 <= hour_from <= hour_to <= 24 (both 0: all day)";
        }

        if (c.Weekdays.Count > 7 || c.Weekdays.Any(d => !Enum.IsDefined(d)) || c.Channels.Any(ch => ch is < SalesChannel.Store or > SalesChannel.App))
        {
            return $"{field} has an unknown weekday or channel";
        }

        if (c.Tiers.Count > Limits.TiersMax || c.Flags.Count > Limits.FlagRulesMax)
        {
            return $"{field} lists too many tiers or flags";
        }

        // 0 is x1, as on every rule (configurations stored before 0 was mapped to x1 hold 0).
        if (c.MultiplierBp != 0 && CheckBonusMultiplier(c.MultiplierBp, field + ".multiplier_bp") is { } multiplierError)
        {
            return multiplierError;
        }

        if (c.MultiplierBp <= Multipliers.One && c.BonusPoints == 0)
        {
            return $"{field} gives nothing: it needs a multiplier_bp above {Multipliers.One} (x1) or bonus_points";
        }

        return CheckPoints(c.BonusPoints, field + ".bonus_points")
            ?? CheckPoints(c.CapPoints, field + ".cap_points")
            ?? (c.MinSpendMinor is < 0 or > Limits.PurchaseAmountMinorMax ? $"{field}.min_spend_minor must be 0..{Limits.PurchaseAmountMinorMax}" : null);
    }

    private string? CheckTiers()
    {
        if (Tiers is null)
        {
            return null;
        }

        if (Tiers.Tiers.Count is 0 or > Limits.TiersMax)
        {
            return $"tiers must list 1..{Limits.TiersMax} tiers";
        }

        if (!Enum.IsDefined(Tiers.Basis) || Tiers.WindowDays is < 1 or > Limits.TierWindowDaysMax || Tiers.GraceDays is < 0 or > Limits.TierWindowDaysMax)
        {
            return $"tiers needs a basis (POINTS or SPEND), window_days 1..{Limits.TierWindowDaysMax} and grace_days 0..{Limits.TierWindowDaysMax}";
        }

        for (int i = 0; i < Tiers.Tiers.Count; i++)
        {
            TierDefinition t = Tiers.Tiers[i];
            string field = $"tiers.tiers[{i}]";
            string? error = LoyaltyIds.Check(t.Name, field + ".name", Limits.CodeLengthMax)
                ?? CheckBonusMultiplier(t.MultiplierBp, field + ".multiplier_bp");
            if (error is not null)
            {
                return error;
            }

            if (i == 0 ? t.Threshold != 0 : t.Threshold <= Tiers.Tiers[i - 1].Threshold)
            {
                return $"{field}.threshold must be 0 for the first tier and rise strictly from tier to tier";
            }

            if (Tiers.Tiers.Take(i).Any(p => p.Name == t.Name))
            {
                return $"{field} repeats tier {t.Name}";
            }

            if (FreeText.CheckList(t.Perks, field + ".perks", Limits.PerksMax, Limits.NameLengthMax) is { } perks)
            {
                return perks;
            }

            if (t.BonusDaysPerYear is < 0 or > Limits.BonusDaysPerYearMax)
            {
                return $"{field}.bonus_days_per_year must be 0..{Limits.BonusDaysPerYearMax}";
            }
        }

        return CheckTierRenames(Tiers);
    }

    /// <summary>
    /// Why a campaign or reward of these settings names a tier by an old name of
    /// <paramref name="ladder"/> (it would never match: members are read as holding the new name);
    /// null when none does.
    /// </summary>
    public string? NamesRenamedTier(TierLadder ladder)
    {
        if (ladder.Renamed is not { } renamed)
        {
            return null;
        }

        for (int i = 0; i < CampaignList.Count; i++)
        {
            if (CampaignList[i].Tiers.FirstOrDefault(renamed.ContainsKey) is { } old)
            {
                return $"campaigns[{i}].tiers: tier '{old}' is now '{renamed[old]}'";
            }
        }

        for (int i = 0; i < RewardList.Count; i++)
        {
            if (RewardList[i].Tiers?.FirstOrDefault(renamed.ContainsKey) is { } old)
            {
                return $"rewards[{i}].tiers: tier '{old}' is now '{renamed[old]}'";
            }
        }

        return null;
    }

    /// <summary>Old names are names, and few; what they map to is checked against the program's ladder (see <see cref="TierLadder.Follow"/>).</summary>
    private static string? CheckTierRenames(TierLadder ladder)
    {
        if (ladder.Renamed is not { } renamed)
        {
            return null;
        }

        if (renamed.Count > Limits.TierRenamesMax)
        {
            return $"tiers.renamed has more than {Limits.TierRenamesMax} names";
        }

        foreach ((string old, string tier) in renamed)
        {
            if ((LoyaltyIds.Check(old, "tiers.renamed", Limits.CodeLengthMax) ?? LoyaltyIds.Check(tier, $"tiers.renamed['{old}']", Limits.CodeLengthMax)) is { } error)
            {
                return error;
            }
        }

        return null;
    }

    private string? CheckPlans()
    {
        if (PlanList.Count > Limits.MembershipPlansMax)
        {
            return $"membership_plans has more than {Limits.MembershipPlansMax} plans";
        }

        for (int i = 0; i < PlanList.Count; i++)
        {
            if (PlanList[i].Check($"membership_plans[{i}]") is { } error)
            {
                return error;
            }

            if (PlanList.Take(i).Any(p => p.Id == PlanList[i].Id))
            {
                return $"membership_plans[{i}] repeats plan {PlanList[i].Id}";
            }
        }

        string? unknown = CampaignList.SelectMany(c => c.PlanList).Concat(RewardList.SelectMany(r => r.PlanList)).FirstOrDefault(p => FindPlan(p) is null);
        return unknown is null ? null : $"a campaign or reward names plan '{Bounded.Echo(unknown)}', which is not in membership_plans";
    }

    /// <summary>Tier, flag and campaign multipliers only ever add: x1 up to the maximum.</summary>
    private static string? CheckBonusMultiplier(int multiplierBp, string field) =>
        multiplierBp is < Multipliers.One or > Multipliers.Max ? $"{field} must be {Multipliers.One}..{Multipliers.Max} (10000 is x1)" : null;

    private static string? CheckPoints(long points, string field) =>
        points is < 0 or > Limits.BonusPointsMax ? $"{field} must be 0..{Limits.BonusPointsMax}" : null;
}

/// <summary>A program's configuration as the engine applies it, with its version.</summary>
[GenerateSerializer, Immutable]
public sealed record ProgramConfig(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] ProgramSettings Settings,
    [property: Id(2)] long Version);

/// <summary>
/// The answer to a conditional change of a program: the new configuration, or null when the
/// program was not at the expected version (<paramref name="CurrentVersion"/> says where it is)
/// or the change cannot follow the program as it is (<paramref name="Refused"/> says why: a tier
/// dropped from the ladder without saying where its members go).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ProgramPut(
    [property: Id(0)] ProgramConfig? Config,
    [property: Id(1)] long CurrentVersion,
    [property: Id(2)] string? Refused = null);

/// <summary>Checks on ISO 4217 currency codes.</summary>
public static class CurrencyCodes
{
    /// <summary>True for three upper-case ASCII letters.</summary>
    public static bool IsWellFormed(string? code) =>
        code is { Length: 3 } && code.All(c => c is >= 'A' and <= 'Z');
}

/// <summary>
/// How the program's accounting values its points: the money a point stands for (what the
/// retailer expects a redeemed point to cost it), and the breakage expected until the programme
/// has matured lots to observe it on.
/// </summary>
/// <param name="PointValueMinorPerThousand">Money of 1,000 points, in the program's minor units (1,000 = one cent a point for USD).</param>
/// <param name="ExpectedBreakageBp">Share of points expected never to be redeemed, in basis points (0..10,000), used while no lot has matured.</param>
[GenerateSerializer, Immutable]
public sealed record AccountingPolicy(
    [property: Id(0)] long PointValueMinorPerThousand,
    [property: Id(1)] int ExpectedBreakageBp = 0)
{
    /// <summary>Returns null when the policy is valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (PointValueMinorPerThousand is < 0 or > Limits.PointValueMinorPerThousandMax)
        {
            return $"accounting.point_value_minor_per_thousand must be 0..{Limits.PointValueMinorPerThousandMax}";
        }

        return ExpectedBreakageBp is < 0 or > Multipliers.One
            ? $"accounting.expected_breakage_bp must be 0..{Multipliers.One}"
            : null;
    }
}
