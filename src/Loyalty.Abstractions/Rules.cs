using System.Collections.ObjectModel;

namespace Loyalty;

/// <summary>How a fractional number of points becomes whole. Applied to each breakdown component on its own.</summary>
public enum Rounding
{
    /// <summary>Toward zero: 25.98 points are 25.</summary>
    Down = 1,

    /// <summary>To the nearest whole point, halves away from zero: 25.5 points are 26.</summary>
    HalfUp = 2,

    /// <summary>Away from zero: 25.01 points are 26.</summary>
    Up = 3,
}

/// <summary>What a return does when the points it reverses have already been spent.</summary>
public enum NegativeBalancePolicy
{
    /// <summary>The balance goes below zero; future earn pays it back.</summary>
    AllowNegative = 1,

    /// <summary>The balance stops at zero and the missing points are recorded as a shortfall.</summary>
    FloorAtZero = 2,
}

/// <summary>Where a purchase was made.</summary>
public enum SalesChannel
{
    /// <summary>Not stated by the till; matches only campaigns open to every channel.</summary>
    Unspecified = 0,

    /// <summary>A physical store.</summary>
    Store = 1,

    /// <summary>The web shop.</summary>
    Online = 2,

    /// <summary>The retailer's mobile app.</summary>
    App = 3,
}

/// <summary>What tier qualification counts in its rolling window.</summary>
public enum TierBasis
{
    /// <summary>Points earned by purchases, net of returns.</summary>
    Points = 1,

    /// <summary>Money spent (purchase totals in minor units), net of returns.</summary>
    Spend = 2,
}

/// <summary>
/// A multiplier or exclusion for the lines of one SKU or one category. A SKU rule beats a
/// category rule for the same line; a line without a rule earns at 1x.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ProductRule(
    [property: Id(0)] string? Sku,
    [property: Id(1)] string? Category,
    [property: Id(2)] int MultiplierBp,
    [property: Id(3)] bool Exclude)
{
    /// <summary>The rule's name in a breakdown, e.g. "sku:GIFT-50" or "category:wine".</summary>
    public string Code => Sku is not null ? "sku:" + Sku : "category:" + Category;

    /// <summary>The multiplier the rule gives a line, in basis points (0 when excluded).</summary>
    public int EffectiveMultiplierBp => Exclude ? 0 : MultiplierBp;
}

/// <summary>A member flag (or tender carried on the purchase) that earns faster, e.g. "storecard" at 15000 bp (x1.5).</summary>
[GenerateSerializer, Immutable]
public sealed record FlagRule(
    [property: Id(0)] string Flag,
    [property: Id(1)] int MultiplierBp);

/// <summary>
/// A bonus campaign. It applies to a purchase whose local time lies in the window (and on the
/// listed weekdays and hours, when given), made in one of the listed channels, by a member of
/// one of the listed tiers holding one of the listed flags (each list: empty means any). Its
/// effect is a multiplier, a fixed bonus, or both; a member earns at most <see cref="CapPoints"/>
/// from it in total (0: no cap).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record Campaign(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] DateTimeOffset StartsAt,
    [property: Id(3)] DateTimeOffset EndsAt,
    [property: Id(4)] IReadOnlyList<DayOfWeek> Weekdays,
    [property: Id(5)] int HourFrom,
    [property: Id(6)] int HourTo,
    [property: Id(7)] IReadOnlyList<SalesChannel> Channels,
    [property: Id(8)] IReadOnlyList<string> Tiers,
    [property: Id(9)] IReadOnlyList<string> Flags,
    [property: Id(10)] int MultiplierBp,
    [property: Id(11)] long BonusPoints,
    [property: Id(12)] long CapPoints,
    [property: Id(13)] long MinSpendMinor,
    [property: Id(14)] IReadOnlyList<string>? Plans = null)
{
    /// <summary>Membership plans whose members alone get the campaign; empty means everyone.</summary>
    public IReadOnlyList<string> PlanList => Plans ?? [];
}

/// <summary>One rung of the tier ladder.</summary>
[GenerateSerializer, Immutable]
public sealed record TierDefinition(
    [property: Id(0)] string Name,
    [property: Id(1)] long Threshold,
    [property: Id(2)] int MultiplierBp,
    [property: Id(3)] IReadOnlyList<string> Perks,
    [property: Id(4)] int BonusDaysPerYear = 0);

/// <summary>
/// The tier ladder: tiers from the entry tier (threshold 0) upwards, qualification counted over
/// a rolling window of <see cref="WindowDays"/>. A member moves up on the purchase that crosses a
/// threshold; the tier is then held for one window, reviewed <see cref="GraceDays"/> after the
/// window ends, and lowered by at most one tier per review.
/// </summary>
/// <remarks>
/// A member's tier is kept by name, and a member that has not changed since keeps the name it
/// had. So a ladder never loses a name silently: <see cref="Renamed"/> maps every name an
/// earlier ladder had, and this one does not, to the tier its members now hold (see <see cref="Follow"/>).
/// </remarks>
[GenerateSerializer, Immutable]
public sealed record TierLadder(
    [property: Id(0)] TierBasis Basis,
    [property: Id(1)] int WindowDays,
    [property: Id(2)] int GraceDays,
    [property: Id(3)] IReadOnlyList<TierDefinition> Tiers,
    [property: Id(4)] IReadOnlyDictionary<string, string>? Renamed = null)
{
    /// <summary>The ladder of a program without tiers: everyone is "standard" at 1x.</summary>
    public static readonly TierLadder Default = new(TierBasis.Points, 365, 0,
        [new TierDefinition("standard", 0, Multipliers.One, [])]);

    /// <summary>
    /// The index of the named tier, or of the tier an old name maps to (<see cref="Renamed"/>);
    /// the entry tier when the name is unknown.
    /// </summary>
    public int IndexOf(string? name)
    {
        int at = Find(name);
        return at >= 0 ? at
            : name is not null && Renamed is { } renamed && renamed.TryGetValue(name, out string? now) ? Math.Max(0, Find(now))
            : 0;
    }

    /// <summary>The tier's name in this ladder of a name a member holds (an old name gives its tier's new one).</summary>
    public string Resolve(string? name) => Tiers[IndexOf(name)].Name;

    /// <summary>Whether the ladder has a tier of this name.</summary>
    public bool Has(string name) => Find(name) >= 0;

    /// <summary>Whether the name is one of the ladder's tiers or old names (an unknown one is read as the entry tier).</summary>
    public bool Knows(string? name) => Find(name) >= 0 || (name is not null && Renamed?.ContainsKey(name) == true);

    /// <summary>
    /// This ladder as it follows <paramref name="before"/>, a program's ladder until now: every
    /// name <paramref name="before"/> knew (its tiers and its old names) that this one has not
    /// must be mapped by <see cref="Renamed"/> to the tier its members move to, or the change is
    /// refused (they would fall to the entry tier, without an entry saying so). The old entry tier
    /// maps to the new one unless named; old names already kept follow their tier to its new name,
    /// and a mapping sent back as it is kept says nothing new. An old name may name a tier again
    /// only if it is the tier its members are read as holding. Null when refused, with the reason
    /// in <paramref name="refused"/>.
    /// </summary>
    public TierLadder? Follow(TierLadder before, out string? refused)
    {
        if (Given(before, out refused) is not { } renamed)
        {
            return null;
        }

        if (EntryMovedUp(before, renamed) is { } entry)
        {
            refused = $"tiers: '{entry}' names the entry tier, whose members hold it without a review date: they can only move to the new entry tier '{Tiers[0].Name}'; "
                + "give the higher tier another name";
            return null;
        }

        for (int i = 0; i < before.Tiers.Count; i++)
        {
            string name = before.Tiers[i].Name;
            if (Has(name) || renamed.ContainsKey(name))
            {
                continue;
            }

            if (i > 0)
            {
                refused = $"tiers: tier '{name}' is not in the new ladder, and its members would fall to '{Tiers[0].Name}' without an entry: "
                    + $"map it to the tier they move to in tiers.renamed (\"{name}\": \"...\"), or keep it";
                return null;
            }

            // The old entry tier's members are in the entry tier either way; named, so a later tier of that name is not theirs.
            renamed[name] = Tiers[0].Name;
        }

        foreach ((string old, string tier) in before.Renamed ?? ReadOnlyDictionary<string, string>.Empty)
        {
            if (renamed.ContainsKey(old))
            {
                continue;
            }

            // Where the old name's members are now: its tier, as it is called now.
            string now = Has(tier) ? tier : renamed.GetValueOrDefault(tier, Tiers[0].Name);
            if (Has(old) && now != old)
            {
                refused = $"tiers: '{old}' is an old name of tier '{now}', and members may still hold it by that name: give the new tier another name";
                return null;
            }

            if (!Has(old))
            {
                renamed[old] = now;
            }
        }

        if (renamed.Count > Limits.TierRenamesMax)
        {
            refused = $"tiers.renamed: the ladder would keep {renamed.Count} old tier names, more than {Limits.TierRenamesMax}";
            return null;
        }

        refused = null;
        return this with { Renamed = renamed.Count == 0 ? null : renamed };
    }

    /// <summary>
    /// A name <paramref name="before"/> reads as its entry tier (its entry tier's, or an old name
    /// of it) that this ladder would read as a higher tier, by name or by <paramref name="given"/>;
    /// null when none. The entry tier is held without a review date, so its members would keep
    /// the higher tier for good.
    /// </summary>
    private string? EntryMovedUp(TierLadder before, Dictionary<string, string> given)
    {
        IEnumerable<string> entryNames = [before.Tiers[0].Name, .. (before.Renamed ?? ReadOnlyDictionary<string, string>.Empty).Where(r => before.IndexOf(r.Value) == 0).Select(r => r.Key)];
        foreach (string name in entryNames)
        {
            if (Find(name) > 0 || (given.TryGetValue(name, out string? now) && Find(now) > 0))
            {
                return name;
            }
        }

        return null;
    }

    /// <summary>What this ladder's <see cref="Renamed"/> says that <paramref name="before"/> does not already keep; null when it names what cannot be mapped.</summary>
    private Dictionary<string, string>? Given(TierLadder before, out string? refused)
    {
        var given = new Dictionary<string, string>(StringComparer.Ordinal);
        refused = null;
        foreach ((string old, string tier) in Renamed ?? ReadOnlyDictionary<string, string>.Empty)
        {
            if (before.Renamed is { } kept && kept.TryGetValue(old, out string? keptTier) && keptTier == tier)
            {
                continue;
            }

            refused = !before.Knows(old) ? $"tiers.renamed: '{old}' is not a tier the program had"
                : Has(old) ? $"tiers.renamed: '{old}' is a tier of the new ladder; only names it no longer has are mapped"
                : !Has(tier) ? $"tiers.renamed: '{old}' maps to '{tier}', which is not a tier of the new ladder"
                : null;
            if (refused is not null)
            {
                return null;
            }

            given[old] = tier;
        }

        return given;
    }

    private int Find(string? name)
    {
        for (int i = 0; i < Tiers.Count; i++)
        {
            if (Tiers[i].Name == name)
            {
                return i;
            }
        }

        return -1;
    }
}

/// <summary>Multipliers are integers in basis points: 10000 is x1, 15000 is x1.5, 20000 is double.</summary>
public static class Multipliers
{
    /// <summary>x1 in basis points.</summary>
    public const int One = 10_000;

    /// <summary>The largest multiplier, x10.</summary>
    public const int Max = 100_000;
}
