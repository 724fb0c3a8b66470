using System.Collections.ObjectModel;
using Google.Protobuf.WellKnownTypes;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Program settings between the wire and the domain. Unset enums take the documented defaults.</summary>
internal static class ProgramMapping
{
    /// <summary>The settings, or null with the reason they cannot be mapped; the domain check runs afterwards.</summary>
    public static ProgramSettings? ToSettings(V1.ProgramSettings? m, out string? error)
    {
        error = null;
        if (m is null)
        {
            error = "settings is required";
            return null;
        }

        var campaigns = new List<Campaign>(m.Campaigns.Count);
        for (int i = 0; i < m.Campaigns.Count && error is null; i++)
        {
            campaigns.Add(ToCampaign(m.Campaigns[i], $"settings.campaigns[{i}]", ref error));
        }

        if (error is not null)
        {
            return null;
        }

        return new ProgramSettings(
            m.Name, m.Currency, m.CurrencyExponent, m.EarnPointsPerUnit,
            m.Rounding == V1.Rounding.Unspecified ? Rounding.Down : (Rounding)(int)m.Rounding,
            m.TimeZone.Length == 0 ? "UTC" : m.TimeZone,
            m.PendingDays,
            m.NegativeBalance == V1.NegativeBalancePolicy.Unspecified ? NegativeBalancePolicy.AllowNegative : (NegativeBalancePolicy)(int)m.NegativeBalance,
            m.SignupBonusPoints, m.DailyEarnCapPoints, m.MonthlyEarnCapPoints,
            [.. m.ProductRules.Select(r => new ProductRule(Optional(r.Sku), Optional(r.Category), r.Exclude ? r.MultiplierBp : Multiplier(r.MultiplierBp), r.Exclude))],
            [.. m.FlagRules.Select(r => new FlagRule(r.Flag, Multiplier(r.MultiplierBp)))],
            campaigns,
            m.Tiers is null ? null : new TierLadder(
                m.Tiers.Basis == V1.TierBasis.Unspecified ? TierBasis.Points : (TierBasis)(int)m.Tiers.Basis,
                m.Tiers.WindowDays, m.Tiers.GraceDays,
                [.. m.Tiers.Tiers.Select(t => new TierDefinition(t.Name, t.Threshold, Multiplier(t.MultiplierBp), [.. t.Perks], t.BonusDaysPerYear))],
                m.Tiers.Renamed.Count == 0 ? null : new Dictionary<string, string>(m.Tiers.Renamed, StringComparer.Ordinal)),
            m.Expiry is null ? null : new ExpiryPolicy(
                m.Expiry.Mode == V1.ExpiryMode.Unspecified ? ExpiryMode.None : (ExpiryMode)((int)m.Expiry.Mode - 1),
                m.Expiry.LifespanMonths, m.Expiry.InactivityMonths, m.Expiry.WarnDays),
            [.. m.Rewards.Select(ToReward)],
            m.ReservationHoldSeconds == 0 ? ProgramSettings.ReservationHoldSecondsDefault : m.ReservationHoldSeconds,
            m.Referrals is null ? null : new ReferralPolicy(
                m.Referrals.ReferrerPoints, m.Referrals.ReferredPoints, m.Referrals.MinPurchaseMinor, m.Referrals.CapPerPeriod,
                m.Referrals.PeriodDays == 0 ? ReferralPolicy.PeriodDaysDefault : m.Referrals.PeriodDays),
            m.MaxBackdateDays == 0 ? ProgramSettings.MaxBackdateDaysDefault : m.MaxBackdateDays,
            m.Accounting is null ? null : new AccountingPolicy(m.Accounting.PointValueMinorPerThousand, m.Accounting.ExpectedBreakageBp),
            m.FeedbackRewardPoints,
            m.BonusDays is null ? null : new BonusDayPolicy(m.BonusDays.MultiplierBp,
                m.BonusDays.Stacking == V1.BonusDayStacking.Unspecified ? BonusDayStacking.Stack : (BonusDayStacking)(int)m.BonusDays.Stacking),
            m.Giving is null ? null : new GivingPolicy(m.Giving.ShareBp, [.. m.Giving.Causes.Select(c => new Cause(c.Id, c.Name))], Optional(m.Giving.DefaultCause)),
            m.Birthday is null ? null : new BirthdayPolicy(m.Birthday.BonusPoints, Optional(m.Birthday.GiftRewardId)),
            m.MembershipPlans.Count == 0 ? null : [.. m.MembershipPlans.Select(p => new MembershipPlan(p.Id, p.Name, p.FeeMinor, p.TermMonths, p.TrialDays,
                Multiplier(p.MultiplierBp), [.. p.Perks], p.EarlyAccess))],
            m.TradeIn is null ? null : new TradeInPolicy([.. m.TradeIn.Rates.Select(r => new TradeInRate(r.Category, (TradeInCondition)(int)r.Condition, r.CreditMinor))]));
    }

    /// <summary>The settings message.</summary>
    public static V1.ProgramSettings ToMessage(ProgramSettings s)
    {
        // Setting a policy's message to null leaves it unset, as the program has none.
        var m = new V1.ProgramSettings
        {
            Name = s.Name,
            Currency = s.Currency,
            CurrencyExponent = s.CurrencyExponent,
            EarnPointsPerUnit = s.EarnPointsPerUnit,
            Rounding = (V1.Rounding)(int)s.Rounding,
            TimeZone = s.TimeZone,
            PendingDays = s.PendingDays,
            NegativeBalance = (V1.NegativeBalancePolicy)(int)s.NegativeBalance,
            SignupBonusPoints = s.SignupBonusPoints,
            DailyEarnCapPoints = s.DailyEarnCapPoints,
            MonthlyEarnCapPoints = s.MonthlyEarnCapPoints,
            Tiers = s.Tiers is { } ladder ? ToMessage(ladder) : null,
            Expiry = s.Expiry is { } expiry ? ToMessage(expiry) : null,
            Referrals = s.Referrals is { } referrals ? ToMessage(referrals) : null,
            ReservationHoldSeconds = s.ReservationHoldSeconds,
            MaxBackdateDays = s.MaxBackdateDays,
            FeedbackRewardPoints = s.FeedbackRewardPoints,
            Accounting = s.Accounting is { } accounting
                ? new V1.AccountingPolicy { PointValueMinorPerThousand = accounting.PointValueMinorPerThousand, ExpectedBreakageBp = accounting.ExpectedBreakageBp }
                : null,
            BonusDays = s.BonusDays is { } bonusDays ? new V1.BonusDayPolicy { MultiplierBp = bonusDays.MultiplierBp, Stacking = (V1.BonusDayStacking)(int)bonusDays.Stacking } : null,
            Giving = s.Giving is { } giving ? ToMessage(giving) : null,
            Birthday = s.Birthday is { } birthday ? new V1.BirthdayPolicy { BonusPoints = birthday.BonusPoints, GiftRewardId = birthday.GiftRewardId ?? "" } : null,
            TradeIn = s.TradeIn is { } tradeIn ? ToMessage(tradeIn) : null,
        };
        m.ProductRules.AddRange(s.ProductRuleList.Select(r => new V1.ProductRule { Sku = r.Sku ?? "", Category = r.Category ?? "", MultiplierBp = r.MultiplierBp, Exclude = r.Exclude }));
        m.FlagRules.AddRange(s.FlagRuleList.Select(r => new V1.FlagRule { Flag = r.Flag, MultiplierBp = r.MultiplierBp }));
        m.Campaigns.AddRange(s.CampaignList.Select(ToMessage));
        m.Rewards.AddRange(s.RewardList.Select(ToMessage));
        m.MembershipPlans.AddRange(s.PlanList.Select(ToMessage));
        return m;
    }

    private static V1.TierLadder ToMessage(TierLadder ladder)
    {
        var m = new V1.TierLadder { Basis = (V1.TierBasis)(int)ladder.Basis, WindowDays = ladder.WindowDays, GraceDays = ladder.GraceDays };
        m.Tiers.AddRange(ladder.Tiers.Select(t =>
        {
            var tier = new V1.Tier { Name = t.Name, Threshold = t.Threshold, MultiplierBp = t.MultiplierBp, BonusDaysPerYear = t.BonusDaysPerYear };
            tier.Perks.AddRange(t.Perks);
            return tier;
        }));
        foreach ((string old, string tier) in ladder.Renamed ?? ReadOnlyDictionary<string, string>.Empty)
        {
            m.Renamed[old] = tier;
        }

        return m;
    }

    // The wire's modes start at 1 (0 is unspecified); the engine's at 0.
    private static V1.ExpiryPolicy ToMessage(ExpiryPolicy expiry) => new()
    {
        Mode = (V1.ExpiryMode)((int)expiry.Mode + 1),
        LifespanMonths = expiry.LifespanMonths,
        InactivityMonths = expiry.InactivityMonths,
        WarnDays = expiry.WarnDays,
    };

    private static V1.ReferralPolicy ToMessage(ReferralPolicy referrals) => new()
    {
        ReferrerPoints = referrals.ReferrerPoints,
        ReferredPoints = referrals.ReferredPoints,
        MinPurchaseMinor = referrals.MinPurchaseMinor,
        CapPerPeriod = referrals.CapPerPeriod,
        PeriodDays = referrals.PeriodDays,
    };

    private static V1.GivingPolicy ToMessage(GivingPolicy giving)
    {
        var m = new V1.GivingPolicy { ShareBp = giving.ShareBp, DefaultCause = giving.DefaultCause ?? "" };
        m.Causes.AddRange(giving.Causes.Select(c => new V1.GivingCause { Id = c.Id, Name = c.Name }));
        return m;
    }

    private static V1.TradeInPolicy ToMessage(TradeInPolicy tradeIn)
    {
        var m = new V1.TradeInPolicy();
        m.Rates.AddRange(tradeIn.Rates.Select(r => new V1.TradeInRate { Category = r.Category, Condition = (V1.TradeInCondition)(int)r.Condition, CreditMinor = r.CreditMinor }));
        return m;
    }

    private static V1.MembershipPlan ToMessage(MembershipPlan p)
    {
        var plan = new V1.MembershipPlan { Id = p.Id, Name = p.Name, FeeMinor = p.FeeMinor, TermMonths = p.TermMonths, TrialDays = p.TrialDays, MultiplierBp = p.MultiplierBp, EarlyAccess = p.EarlyAccess };
        plan.Perks.AddRange(p.PerkList);
        return plan;
    }

    private static Reward ToReward(V1.Reward r) =>
        new(r.Id, r.Name, (RewardKind)(int)r.Kind, r.PointsPrice, r.ValueMinor, Optional(r.Sku), Optional(r.Cause),
            [.. r.Tiers], r.AvailableFrom is null ? null : Time(r.AvailableFrom), r.AvailableUntil is null ? null : Time(r.AvailableUntil),
            r.HasStock ? r.Stock : null, r.Plans.Count == 0 ? null : [.. r.Plans]);

    /// <summary>The catalogue entry's message.</summary>
    public static V1.Reward ToMessage(Reward r)
    {
        var m = new V1.Reward
        {
            Id = r.Id,
            Name = r.Name,
            Kind = (V1.RewardKind)(int)r.Kind,
            PointsPrice = r.PointsPrice,
            ValueMinor = r.ValueMinor,
            Sku = r.Sku ?? "",
            Cause = r.Cause ?? "",
            AvailableFrom = r.AvailableFrom is { } from ? Timestamp.FromDateTimeOffset(from) : null,
            AvailableUntil = r.AvailableUntil is { } until ? Timestamp.FromDateTimeOffset(until) : null,
        };
        m.Tiers.AddRange(r.TierList);
        m.Plans.AddRange(r.PlanList);
        if (r.Stock is { } stock)
        {
            m.Stock = stock;
        }

        return m;
    }

    private static Campaign ToCampaign(V1.Campaign c, string field, ref string? error)
    {
        var weekdays = new List<DayOfWeek>(c.Weekdays.Count);
        foreach (V1.Weekday day in c.Weekdays)
        {
            if (day is < V1.Weekday.Monday or > V1.Weekday.Sunday)
            {
                error = $"{field}.weekdays has an unspecified or unknown weekday";
            }

            weekdays.Add(day == V1.Weekday.Sunday ? DayOfWeek.Sunday : (DayOfWeek)(int)day);
        }

        if (c.StartsAt is null || c.EndsAt is null)
        {
            error ??= $"{field} needs starts_at and ends_at";
        }

        return new Campaign(
            c.Id, c.Name, Time(c.StartsAt), Time(c.EndsAt), weekdays, c.HourFrom, c.HourTo,
            [.. c.Channels.Select(ch => (SalesChannel)(int)ch)], [.. c.Tiers], [.. c.Flags],
            Multiplier(c.MultiplierBp), c.BonusPoints, c.CapPoints, c.MinSpendMinor, c.Plans.Count == 0 ? null : [.. c.Plans]);
    }

    /// <summary>
    /// A multiplier from the wire: 0 (proto3's unset) means x1 on every rule (tier, flag, product,
    /// campaign), so a field left out never changes earning and never means "nothing".
    /// </summary>
    private static int Multiplier(int multiplierBp) => multiplierBp == 0 ? Multipliers.One : multiplierBp;

    private static V1.Campaign ToMessage(Campaign c)
    {
        var m = new V1.Campaign
        {
            Id = c.Id,
            Name = c.Name,
            StartsAt = Timestamp.FromDateTimeOffset(c.StartsAt),
            EndsAt = Timestamp.FromDateTimeOffset(c.EndsAt),
            HourFrom = c.HourFrom,
            HourTo = c.HourTo,
            MultiplierBp = Multiplier(c.MultiplierBp),
            BonusPoints = c.BonusPoints,
            CapPoints = c.CapPoints,
            MinSpendMinor = c.MinSpendMinor,
        };
        m.Weekdays.AddRange(c.Weekdays.Select(d => d == DayOfWeek.Sunday ? V1.Weekday.Sunday : (V1.Weekday)(int)d));
        m.Channels.AddRange(c.Channels.Select(ch => (V1.Channel)(int)ch));
        m.Tiers.AddRange(c.Tiers);
        m.Flags.AddRange(c.Flags);
        m.Plans.AddRange(c.PlanList);
        return m;
    }

    private static DateTimeOffset Time(Timestamp? t)
    {
        if (t is null)
        {
            return default;
        }

        try
        {
            return t.ToDateTimeOffset();
        }
        catch (InvalidOperationException)
        {
            return default;
        }
    }

    private static string? Optional(string value) => value.Length == 0 ? null : value;
}
