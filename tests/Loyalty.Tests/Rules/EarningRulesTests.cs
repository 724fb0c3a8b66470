using Loyalty.Grains;
using static Loyalty.Tests.Rules.RuleBuilders;

namespace Loyalty.Tests.Rules;

/// <summary>The earn rules, one table row per rule, each with the points it must give and why.</summary>
public sealed class EarningRulesTests
{
    public static TheoryData<string, ProgramSettings, Purchase, EarnContext, string> Cases => new()
    {
        { "rounding down: 12.99 x 2 = 25.98", Program(2, Rounding.Down), Basket(12_99), Member(), "base=25 total=25" },
        { "rounding half up: 12.99 x 2 = 25.98", Program(2, Rounding.HalfUp), Basket(12_99), Member(), "base=26 total=26" },
        { "rounding half up: 12.25 = 12.25", Program(1, Rounding.HalfUp), Basket(12_25), Member(), "base=12 total=12" },
        { "rounding up: 12.01 = 12.01", Program(1, Rounding.Up), Basket(12_01), Member(), "base=13 total=13" },
        { "lines earn, not the total (tax earns nothing)", Program(), Basket(110_00, Line("a", 60_00), Line("b", 40_00)), Member(), "base=100 total=100" },
        {
            "gift cards are excluded",
            Program() with { ProductRules = [new ProductRule("GIFT", null, 0, true)] },
            Basket(150_00, Line("a", 100_00), Line("GIFT", 50_00)), Member(), "base=100 sku:GIFT=0 total=100"
        },
        {
            "a category multiplier",
            Program() with { ProductRules = [new ProductRule(null, "wine", 30_000, false)] },
            Basket(30_00, Line("a", 10_00), Line("w1", 20_00, "wine")), Member(), "base=10 category:wine=60 total=70"
        },
        {
            "a SKU rule beats its category's rule",
            Program() with { ProductRules = [new ProductRule(null, "wine", 30_000, false), new ProductRule("w1", null, 5_000, false)] },
            Basket(40_00, Line("w1", 20_00, "wine"), Line("w2", 20_00, "wine")), Member(), "category:wine=60 sku:w1=10 total=70"
        },
        { "the tier multiplier adds on basket points", Program(), Basket(100_00), Member("gold", 15_000), "base=100 gold=50 total=150" },
        {
            "a member flag earns faster",
            Program() with { FlagRules = [new FlagRule("storecard", 15_000)] },
            Basket(100_00), Member(flags: ["storecard"]), "base=100 storecard=50 total=150"
        },
        {
            "the tender counts as the flag",
            Program() with { FlagRules = [new FlagRule("storecard", 15_000)] },
            Basket(100_00) with { Tender = "storecard" }, Member(), "base=100 storecard=50 total=150"
        },
        {
            "a double-points campaign",
            Program() with { Campaigns = [Campaign("double", 20_000)] },
            Basket(100_00), Member(), "base=100 double=100 total=200"
        },
        {
            "multipliers stack by adding: x2 campaign, x1.5 tier, x1.5 flag is basket x 3",
            Program() with { Campaigns = [Campaign("double", 20_000)], FlagRules = [new FlagRule("card", 15_000)] },
            Basket(100_00), Member("gold", 15_000, ["card"]), "base=100 gold=50 card=50 double=100 total=300"
        },
        {
            "two campaigns both apply; a fixed bonus adds",
            Program() with { Campaigns = [Campaign("double", 20_000), Campaign("fifty", bonus: 50)] },
            Basket(100_00), Member(), "base=100 double=100 fifty=50 total=250"
        },
        {
            "a campaign bonus applies to basket points of excluded lines as zero",
            Program() with { ProductRules = [new ProductRule("GIFT", null, 0, true)], Campaigns = [Campaign("double", 20_000)] },
            Basket(50_00, Line("GIFT", 50_00)), Member(), "sku:GIFT=0 double=0 total=0"
        },
        {
            "a campaign's per-member cap",
            Program() with { Campaigns = [Campaign("double", 20_000, cap: 120)] },
            Basket(100_00), Member(campaignEarned: 100), "base=100 double=20 total=120"
        },
        {
            "the daily cap trims bonuses before base points",
            Program() with { Campaigns = [Campaign("double", 20_000)], DailyEarnCapPoints = 500 },
            Basket(100_00), Member(earnedToday: 380), "base=100 double=20 total=120"
        },
        {
            "the monthly cap can leave nothing",
            Program() with { MonthlyEarnCapPoints = 1_000 },
            Basket(100_00), Member(earnedThisMonth: 1_000), "base=0 total=0"
        },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Earn_FollowsTheRule(string rule, ProgramSettings settings, Purchase purchase, EarnContext member, string expected)
    {
        Assert.Null(settings.Check());

        EarnResult earn = Earning.Compute(purchase, settings, member);

        Assert.True(expected == Describe(earn), $"{rule}: expected '{expected}', got '{Describe(earn)}'");
        Assert.Equal(earn.Total.Value, EntryDetails.Total(earn.Components, earn.Components.Count));
    }

    public static TheoryData<string, Campaign, Purchase, bool> CampaignConditions
    {
        get
        {
            Campaign any = Campaign("c", 20_000);
            DateTimeOffset saturday = Wednesday.AddDays(3);
            return new()
            {
                { "inside the window", any, Basket(10_00), true },
                { "before the window", any, Basket(10_00, Wednesday.AddDays(-8)), false },
                { "at the end of the window (exclusive)", any, Basket(10_00, any.EndsAt), false },
                { "weekends only, on a Wednesday", any with { Weekdays = [DayOfWeek.Saturday, DayOfWeek.Sunday] }, Basket(10_00), false },
                { "weekends only, on a Saturday", any with { Weekdays = [DayOfWeek.Saturday, DayOfWeek.Sunday] }, Basket(10_00, saturday), true },
                { "happy hour 17-19, at 10:00", any with { HourFrom = 17, HourTo = 19 }, Basket(10_00), false },
                { "happy hour 17-19, at 18:00", any with { HourFrom = 17, HourTo = 19 }, Basket(10_00, Wednesday.AddHours(8)), true },
                { "online only, in a store", any with { Channels = [SalesChannel.Online] }, Basket(10_00) with { Channel = SalesChannel.Store }, false },
                { "online only, online", any with { Channels = [SalesChannel.Online] }, Basket(10_00) with { Channel = SalesChannel.Online }, true },
                { "gold members only, a standard member", any with { Tiers = ["gold"] }, Basket(10_00), false },
                { "card holders only, paid by card", any with { Flags = ["card"] }, Basket(10_00) with { Tender = "card" }, true },
                { "card holders only, paid otherwise", any with { Flags = ["card"] }, Basket(10_00), false },
                { "minimum spend 50.00, spent 10.00", any with { MinSpendMinor = 50_00 }, Basket(10_00), false },
            };
        }
    }

    [Theory]
    [MemberData(nameof(CampaignConditions))]
    public void Campaign_AppliesOnlyWhenEveryConditionHolds(string rule, Campaign campaign, Purchase purchase, bool applies)
    {
        ProgramSettings settings = Program() with { Campaigns = [campaign] };
        Assert.Null(settings.Check());

        EarnResult earn = Earning.Compute(purchase, settings, Member());

        Assert.True(applies == (earn.Total.Value == 20), $"{rule}: {Describe(earn)}");
    }

    [Fact]
    public void Campaign_HoursAndWeekdays_AreProgramLocal()
    {
        // 23:30 UTC on Friday is 08:30 on Saturday in Tokyo.
        DateTimeOffset fridayNightUtc = new(2026, 11, 27, 23, 30, 0, TimeSpan.Zero);
        Campaign saturdayMorning = Campaign("c", 20_000) with { Weekdays = [DayOfWeek.Saturday], HourFrom = 8, HourTo = 12 };

        EarnResult utc = Earning.Compute(Basket(10_00, fridayNightUtc), Program() with { Campaigns = [saturdayMorning] }, Member());
        EarnResult tokyo = Earning.Compute(Basket(10_00, fridayNightUtc), Program() with { Campaigns = [saturdayMorning], TimeZone = "Asia/Tokyo" }, Member());

        Assert.Equal((10L, 20L), (utc.Total.Value, tokyo.Total.Value));
    }

    [Fact]
    public void Earn_SamePurchaseSameVersion_IsDeterministic()
    {
        ProgramSettings settings = Program(3, Rounding.HalfUp) with
        {
            ProductRules = [new ProductRule(null, "wine", 12_500, false)],
            Campaigns = [Campaign("double", 20_000, bonus: 7)],
            FlagRules = [new FlagRule("card", 11_000)],
        };
        Purchase purchase = Basket(99_99, Line("a", 33_33), Line("w", 55_55, "wine"));

        string[] runs = [.. Enumerable.Range(0, 5).Select(_ => Describe(Earning.Compute(purchase, settings with { }, Member("gold", 13_333, ["card"]))))];

        Assert.Single(runs.Distinct());
    }

    public static TheoryData<string, ProgramSettings, string> Refusals => new()
    {
        { "unknown time zone", Program() with { TimeZone = "Mars/Olympus" }, "time_zone" },
        { "pending too long", Program() with { PendingDays = 400 }, "pending_days" },
        { "negative sign-up bonus", Program() with { SignupBonusPoints = -1 }, "signup_bonus_points" },
        { "rule with sku and category", Program() with { ProductRules = [new ProductRule("a", "b", 20_000, false)] }, "exactly one of sku or category" },
        { "rule multiplier above x10", Program() with { ProductRules = [new ProductRule("a", null, 200_000, false)] }, "multiplier_bp" },
        { "the same sku twice", Program() with { ProductRules = [new ProductRule("a", null, 20_000, false), new ProductRule("a", null, 5_000, false)] }, "repeats sku:a" },
        { "a flag multiplier below x1", Program() with { FlagRules = [new FlagRule("card", 5_000)] }, "flag_rules[0].multiplier_bp" },
        { "a campaign without effect", Program() with { Campaigns = [Campaign("c")] }, "gives nothing" },
        { "a campaign ending before it starts", Program() with { Campaigns = [Campaign("c", 20_000) with { EndsAt = Wednesday.AddDays(-30) }] }, "starts_at before ends_at" },
        { "campaign hours out of order", Program() with { Campaigns = [Campaign("c", 20_000) with { HourFrom = 19, HourTo = 17 }] }, "hour_from" },
        { "two campaigns with one id", Program() with { Campaigns = [Campaign("c", 20_000), Campaign("c", bonus: 5)] }, "repeats id c" },
        { "tiers not starting at zero", Program() with { Tiers = new TierLadder(TierBasis.Points, 365, 0, [new TierDefinition("a", 5, Multipliers.One, [])]) }, "threshold" },
        {
            "tier thresholds not rising",
            Program() with { Tiers = new TierLadder(TierBasis.Points, 365, 0, [new TierDefinition("a", 0, Multipliers.One, []), new TierDefinition("b", 0, Multipliers.One, [])]) },
            "rise strictly"
        },
        { "a tier window of zero days", Program() with { Tiers = new TierLadder(TierBasis.Points, 0, 0, [new TierDefinition("a", 0, Multipliers.One, [])]) }, "window_days" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void ProgramSettings_Invalid_AreRefusedNamingTheField(string rule, ProgramSettings settings, string named)
    {
        string? error = settings.Check();

        Assert.True(error is not null && error.Contains(named, StringComparison.Ordinal), $"{rule}: {error}");
    }
}
