namespace Loyalty.Grains;

/// <summary>How much of one purchase has been returned so far; part of the member's state.</summary>
[GenerateSerializer]
public sealed class ReturnProgress
{
    /// <summary>Whether the purchase is being returned by lines (true) or by amounts (false); the two do not mix.</summary>
    [Id(0)] public bool ByLines { get; set; }

    /// <summary>Money returned so far, in minor units.</summary>
    [Id(1)] public long AmountReturnedMinor { get; set; }

    /// <summary>Money returned so far per SKU, for returns by lines.</summary>
    [Id(2)] public Dictionary<string, long> SkuReturnedMinor { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Points reversed so far, per component of the original earn (same order).</summary>
    [Id(3)] public long[] Reversed { get; set; } = [];
}

/// <summary>The reversal a return causes, before it is split between pending and active points.</summary>
/// <param name="Components">Per original component, the points reversed now (positive numbers).</param>
/// <param name="Total">The sum of <paramref name="Components"/>.</param>
/// <param name="ReturnedAmountMinor">Money this return gives back.</param>
/// <param name="Lines">The SKUs this return gives back (null for a return by amount).</param>
public sealed record ReversalResult(IReadOnlyList<BreakdownComponent> Components, long Total, long ReturnedAmountMinor, IReadOnlyList<SkuAmount>? Lines);

/// <summary>
/// Returns reverse exactly what the purchase earned for the returned part. Each component of the
/// original earn (base, product, tier, flag, campaign) is reversed in the share of the purchase
/// returned so far: by amount, the share is money returned / purchase total; by lines, it is the
/// returned money weighted by each SKU's product multiplier / the whole basket so weighted (an
/// excluded line reverses nothing, a x3 line reverses three times as much). Shares accumulate
/// across partial returns and are truncated, so the returns of a purchase never reverse more
/// than it earned, and returning all of it reverses exactly all of it.
/// </summary>
public static class Reversal
{
    /// <summary>The reversal, or an error message when the return does not fit the purchase.</summary>
    public static ReversalResult? Compute(LedgerEntry original, ReturnProgress? progress, PurchaseReturn request, out string? error)
    {
        EntryDetails details = original.Details ?? new EntryDetails { Components = [new BreakdownComponent(ComponentKind.Base, "base", original.Points.Value)] };
        bool byLines = request.Lines.Count > 0;
        if (progress is not null && progress.ByLines != byLines)
        {
            error = byLines
                ? "this purchase was returned by amount before; return the rest by amount"
                : "this purchase was returned by lines before; return the rest by lines";
            return null;
        }

        if (request.Amount.Currency != original.Currency)
        {
            error = $"currency '{request.Amount.Currency}' does not match the purchase's currency '{original.Currency}'";
            return null;
        }

        (Int128 after, Int128 whole, IReadOnlyList<SkuAmount>? lines) = byLines
            ? ShareByLines(details, progress, request, out error)
            : ShareByAmount(original, progress, request, out error);
        if (error is not null)
        {
            return null;
        }

        var components = new List<BreakdownComponent>(details.Components.Count);
        long total = 0;
        for (int i = 0; i < details.Components.Count; i++)
        {
            BreakdownComponent c = details.Components[i];
            long reversedBefore = progress is not null && i < progress.Reversed.Length ? progress.Reversed[i] : 0;
            long reversedAfter = whole == 0 ? 0 : (long)(c.Points * after / whole);
            long now = reversedAfter - reversedBefore;
            components.Add(c with { Points = now });
            total = checked(total + now);
        }

        return new ReversalResult(components, total, request.ReturnedAmountMinor, lines);
    }

    private static (Int128 After, Int128 Whole, IReadOnlyList<SkuAmount>? Lines) ShareByAmount(
        LedgerEntry original, ReturnProgress? progress, PurchaseReturn request, out string? error)
    {
        long before = progress?.AmountReturnedMinor ?? 0;
        long after = checked(before + request.Amount.AmountMinor);
        error = after > original.AmountMinor
            ? $"the return exceeds the purchase: {before} of {original.AmountMinor} minor units were already returned"
            : null;
        return (after, original.AmountMinor, null);
    }

    private static (Int128 After, Int128 Whole, IReadOnlyList<SkuAmount>? Lines) ShareByLines(
        EntryDetails details, ReturnProgress? progress, PurchaseReturn request, out string? error)
    {
        if (details.Lines is not { Count: > 0 } basket)
        {
            error = "the purchase had no line items; return it by amount";
            return default;
        }

        var returned = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (ReturnLine line in request.Lines)
        {
            returned[line.Sku] = checked((returned.TryGetValue(line.Sku, out long sum) ? sum : 0) + line.AmountMinor);
        }

        Int128 whole = 0, after = 0;
        var lines = new List<SkuAmount>(returned.Count);
        foreach (SkuAmount sku in basket)
        {
            long already = progress is not null && progress.SkuReturnedMinor.TryGetValue(sku.Sku, out long a) ? a : 0;
            long now = returned.Remove(sku.Sku, out long r) ? r : 0;
            if (checked(already + now) > sku.AmountMinor)
            {
                error = $"the return exceeds the purchase for sku '{sku.Sku}': {already} of {sku.AmountMinor} minor units were already returned";
                return default;
            }

            whole += (Int128)sku.AmountMinor * sku.MultiplierBp;
            after += (Int128)(already + now) * sku.MultiplierBp;
            if (now > 0)
            {
                lines.Add(sku with { AmountMinor = now });
            }
        }

        if (returned.Count > 0)
        {
            error = $"sku '{returned.Keys.First()}' was not part of the purchase";
            return default;
        }

        error = null;
        return (after, whole, lines);
    }
}
