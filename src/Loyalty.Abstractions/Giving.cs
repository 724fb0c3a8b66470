namespace Loyalty;

/// <summary>A cause a programme gives to (a charity, a fund), from its curated list.</summary>
[GenerateSerializer, Immutable]
public sealed record Cause(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name);

/// <summary>
/// Giving back (mission-based programmes; AmazonSmile gave 0.5 % of purchases): a share of each
/// purchase's money goes to the cause the member chose from <see cref="Causes"/> (or to
/// <see cref="DefaultCause"/> when it chose none). The engine records the amount per purchase and
/// reverses it with returns; paying the causes is the retailer's.
/// </summary>
/// <param name="ShareBp">The share of a purchase's money, in basis points: 50 is 0.5 %.</param>
/// <param name="Causes">The causes members may choose.</param>
/// <param name="DefaultCause">The cause of members who chose none; null: they give nothing until they choose.</param>
[GenerateSerializer, Immutable]
public sealed record GivingPolicy(
    [property: Id(0)] int ShareBp,
    [property: Id(1)] IReadOnlyList<Cause> Causes,
    [property: Id(2)] string? DefaultCause = null)
{
    /// <summary>Whether the cause is on the list.</summary>
    public bool Has(string? causeId) => causeId is not null && Causes.Any(c => c.Id == causeId);

    /// <summary>The money given for a purchase of <paramref name="amountMinor"/>, rounded down to a minor unit.</summary>
    public long ShareOf(long amountMinor) => (long)((Int128)amountMinor * ShareBp / Multipliers.One);

    /// <summary>Returns null when the policy is valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (ShareBp is < 1 or > Multipliers.One)
        {
            return $"giving.share_bp must be 1..{Multipliers.One} (50 is 0.5 % of each purchase)";
        }

        if (Causes.Count is 0 or > Limits.CausesMax)
        {
            return $"giving.causes must list 1..{Limits.CausesMax} causes";
        }

        for (int i = 0; i < Causes.Count; i++)
        {
            string field = $"giving.causes[{i}]";
            if ((LoyaltyIds.Check(Causes[i].Id, field + ".id", Limits.CodeLengthMax) ?? FreeText.Check(Causes[i].Name, field + ".name", Limits.NameLengthMax)) is { } error)
            {
                return error;
            }

            if (Causes.Take(i).Any(c => c.Id == Causes[i].Id))
            {
                return $"{field} repeats cause {Causes[i].Id}";
            }
        }

        return DefaultCause is not null && !Has(DefaultCause) ? $"giving.default_cause '{Bounded.Echo(DefaultCause)}' is not one of giving.causes" : null;
    }
}
