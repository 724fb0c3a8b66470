using System.Globalization;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>
/// A point-of-sale mix: baskets of 1..N lines from a catalogue of SKUs in five categories
/// (gift cards among them), from one of many stores. The program it runs against excludes gift
/// cards and earns x2 on groceries, so every purchase goes through the product rules.
/// </summary>
internal sealed class PosMix(int linesMax, int stores, int seed)
{
    private const int CatalogueSize = 1_000;

    /// <summary>A line costs 0.50 up to this plus 0.50; a basket without lines up to this plus 1.00.</summary>
    private const int LineAmountSpreadMinor = 10_000;

    private const int TotalAmountSpreadMinor = 20_000;
    private static readonly string[] Categories = ["grocery", "electronics", "apparel", "home", "giftcards"];
    private static readonly string[] Skus = [.. Enumerable.Range(0, CatalogueSize).Select(n => n % Categories.Length == 4 ? "GIFT-CARD" : "SKU-" + n.ToString(CultureInfo.InvariantCulture))];
    private static readonly string[] StoreIds = [.. Enumerable.Range(0, 1_000).Select(n => "store-" + n.ToString(CultureInfo.InvariantCulture))];
    private readonly Random _random = new(seed);

    internal readonly record struct Line(string Sku, string Category, long AmountMinor);

    internal sealed record Basket(int Member, string Store, long AmountMinor, Line[] Lines);

    /// <summary>The program the mix is meant for; with <paramref name="rules"/> "full", also pending points, expiry and tiers.</summary>
    public static V1.PutProgramRequest Program(string programId, string rules = "plain")
    {
        var request = new V1.PutProgramRequest
        {
            ProgramId = programId,
            Settings = new V1.ProgramSettings
            {
                Name = "Load test",
                Currency = "USD",
                CurrencyExponent = 2,
                EarnPointsPerUnit = 1,
                ProductRules =
                {
                    new V1.ProductRule { Sku = "GIFT-CARD", Exclude = true },
                    new V1.ProductRule { Category = "grocery", MultiplierBp = 20_000 },
                },
                Rewards = { new V1.Reward { Id = RewardId, Name = "Free coffee", Kind = V1.RewardKind.Product, PointsPrice = 10, Sku = "COFFEE" } },
            },
        };
        if (rules == "full")
        {
            // What most retailers' programmes have beside earning: a return window, points that
            // expire, and tiers. Each makes a purchase write more than its entry (a due time).
            V1.ProgramSettings settings = request.Settings;
            settings.PendingDays = 14;
            settings.Expiry = new V1.ExpiryPolicy { Mode = V1.ExpiryMode.Lifespan, LifespanMonths = 12, WarnDays = 30 };
            settings.Tiers = new V1.TierLadder
            {
                Basis = V1.TierBasis.Points,
                WindowDays = 365,
                GraceDays = 30,
                Tiers =
                {
                    new V1.Tier { Name = "member", Threshold = 0 },
                    new V1.Tier { Name = "silver", Threshold = 500, MultiplierBp = 12_500 },
                    new V1.Tier { Name = "gold", Threshold = 2_000, MultiplierBp = 15_000 },
                },
            };
        }

        return request;
    }

    /// <summary>The reward members redeem in a run with redemptions.</summary>
    public const string RewardId = "coffee";

    /// <summary>The next basket, for <paramref name="member"/>.</summary>
    public Basket Next(int member)
    {
        string store = StoreIds[_random.Next(Math.Min(stores, StoreIds.Length))];
        if (linesMax == 0)
        {
            return new Basket(member, store, 1_00 + _random.Next(TotalAmountSpreadMinor), []);
        }

        var lines = new Line[1 + _random.Next(linesMax)];
        long total = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            int n = _random.Next(CatalogueSize);
            lines[i] = new Line(Skus[n], Categories[n % Categories.Length], 50 + _random.Next(LineAmountSpreadMinor));
            total += lines[i].AmountMinor;
        }

        return new Basket(member, store, total, lines);
    }
}
