namespace Loyalty.Grains;

/// <summary>
/// How much of one purchase has been returned so far; part of the member's state. It changes only
/// by <see cref="Add"/> (a return applied) and <see cref="Touch"/>; its collections are read-only views.
/// </summary>
[GenerateSerializer]
public sealed class ReturnProgress
{
    // The fields keep the ids of the public properties they replace, so older snapshots load.
    [Id(0)] private bool _byLines;
    [Id(1)] private long _amountReturnedMinor;
    [Id(2)] private Dictionary<string, long> _skuReturnedMinor = new(StringComparer.Ordinal);
    [Id(3)] private long[] _reversed = [];
    [Id(4)] private Dictionary<string, long> _skuReturnedQuantity = new(StringComparer.Ordinal);
    [Id(5)] private bool _complete;
    [Id(6)] private long _touched;
    [Id(7)] private int _count;
    [Id(8)] private long _pendingReversed;

    /// <summary>Creates the progress of a purchase with no return yet.</summary>
    /// <param name="components">How many components the purchase's earn has.</param>
    /// <param name="complete">Whether it will hold every return of the purchase (see <see cref="Complete"/>).</param>
    /// <param name="touched">The member's sequence when it is made.</param>
    public ReturnProgress(int components, bool complete = false, long touched = 0)
    {
        _reversed = new long[components];
        _complete = complete;
        _touched = touched;
    }

    /// <summary>Whether the purchase is being returned by lines (true) or by amounts (false); the two do not mix.</summary>
    public bool ByLines => _byLines;

    /// <summary>Money returned so far, in minor units.</summary>
    public long AmountReturnedMinor => _amountReturnedMinor;

    /// <summary>Money returned so far per SKU, for returns by lines.</summary>
    public IReadOnlyDictionary<string, long> SkuReturnedMinor => _skuReturnedMinor;

    /// <summary>Points reversed so far, per component of the original earn (same order).</summary>
    public IReadOnlyList<long> Reversed => _reversed;

    /// <summary>Units returned so far per SKU, for returns by lines (purchases recorded with quantities).</summary>
    public IReadOnlyDictionary<string, long> SkuReturnedQuantity => _skuReturnedQuantity;

    /// <summary>
    /// Whether this holds every return of the purchase: true when it was made from the purchase's
    /// returns read from the ledger (and kept up since), false when it was begun by a return
    /// replayed after the purchase's older returns were forgotten (see <see cref="ReturnBook.ReturnsKept"/>
    /// and <see cref="ReturnBook.ReturnLinesKept"/>).
    /// </summary>
    public bool Complete => _complete;

    /// <summary>The member's sequence when this was last used: the least recently used is forgotten first.</summary>
    public long Touched => _touched;

    /// <summary>How many returns it holds.</summary>
    public int Count => _count;

    /// <summary>Points its returns took from the purchase's pending points (the rest came from the balance).</summary>
    public long PendingReversed => _pendingReversed;

    /// <summary>
    /// The SKUs and earn components it holds: its weight against <see cref="ReturnBook.ReturnLinesKept"/>
    /// (a SKU's quantity is kept under the same key as its money, so the SKUs are counted once).
    /// </summary>
    public int Lines => _skuReturnedMinor.Count + _reversed.Length;

    /// <summary>The complete progress of <paramref name="purchase"/> from every return of it read from the ledger (empty for none).</summary>
    public static ReturnProgress Of(LedgerEntry purchase, IReadOnlyList<LedgerEntry> returns)
    {
        // An earn without details is reversed as one base component (see Compute): its progress keeps one too.
        var progress = new ReturnProgress(purchase.DetailsAs<EarnDetails>()?.Components.Count ?? 1, complete: true);
        foreach (LedgerEntry r in returns)
        {
            progress.Add(r.DetailsAs<ReturnDetails>() ?? throw new InvalidOperationException($"Return entry {r.MemberId}#{r.Sequence} has no details."));
        }

        return progress;
    }

    /// <summary>
    /// The progress a merged-away duplicate handed over, as incomplete (the duplicate may have
    /// forgotten older returns), counted as one return, touched at <paramref name="sequence"/>.
    /// </summary>
    public static ReturnProgress Adopted(ReturnedSoFar returned, long sequence)
    {
        var progress = new ReturnProgress(0, complete: false, sequence)
        {
            _byLines = returned.ByLines,
            _amountReturnedMinor = returned.AmountReturnedMinor,
            _skuReturnedMinor = new Dictionary<string, long>(returned.SkuReturnedMinor, StringComparer.Ordinal),
            _reversed = [.. returned.Reversed],
            _skuReturnedQuantity = new Dictionary<string, long>(returned.SkuReturnedQuantity ?? new Dictionary<string, long>(), StringComparer.Ordinal),
            _count = 1,
        };
        return progress;
    }

    /// <summary>What a merge hands on of this progress, for <paramref name="purchaseId"/>.</summary>
    public ReturnedSoFar Transfer(string purchaseId) =>
        new(purchaseId, _byLines, _amountReturnedMinor, new Dictionary<string, long>(_skuReturnedMinor), [.. _reversed], new Dictionary<string, long>(_skuReturnedQuantity));

    /// <summary>Marks the progress used at the member's sequence <paramref name="sequence"/>.</summary>
    public void Touch(long sequence) => _touched = sequence;

    /// <summary>Adds one return to the progress.</summary>
    public void Add(ReturnDetails details)
    {
        if (_count++ == 0)
        {
            _byLines = details.Lines is not null;
        }

        _amountReturnedMinor = checked(_amountReturnedMinor + details.ReturnedAmountMinor);
        _pendingReversed = checked(_pendingReversed + details.PendingReversed);
        foreach (SkuAmount line in details.Lines ?? [])
        {
            _skuReturnedMinor[line.Sku] = checked(_skuReturnedMinor.GetValueOrDefault(line.Sku) + line.AmountMinor);
            if (line.Quantity > 0)
            {
                _skuReturnedQuantity[line.Sku] = checked(_skuReturnedQuantity.GetValueOrDefault(line.Sku) + line.Quantity);
            }
        }

        for (int i = 0; i < details.Components.Count && i < _reversed.Length; i++)
        {
            _reversed[i] = checked(_reversed[i] + details.Components[i].Points);
        }
    }
}

/// <summary>The reversal a return causes, before it is split between pending and active points.</summary>
/// <param name="Components">Per original component, the points reversed now (positive numbers).</param>
/// <param name="Total">The sum of <paramref name="Components"/>.</param>
/// <param name="ReturnedAmountMinor">Money this return gives back.</param>
/// <param name="Lines">The SKUs this return gives back (null for a return by amount).</param>
/// <param name="Full">The purchase has now been returned in full.</param>
public sealed record ReversalResult(IReadOnlyList<BreakdownComponent> Components, long Total, long ReturnedAmountMinor, IReadOnlyList<SkuAmount>? Lines, bool Full);

/// <summary>
/// Returns reverse exactly what the purchase earned for the returned part, component by
/// component. By amount, every component is reversed in the share money returned / purchase
/// total. By lines, a basket component (base, or one product rule) is reversed in the share of
/// its own lines' money that came back, and a bonus component (tier, flag, campaign) in the share
/// of the basket's weighted money that came back (weighted by each line's product multiplier, so
/// an excluded line reverses no bonus and a x3 line three times as much). Shares accumulate
/// across partial returns and are truncated, so the returns of a purchase never reverse more
/// than it earned, and returning all of it reverses exactly all of it.
/// </summary>
public static class Reversal
{
    /// <summary>A share of a component: numerator over denominator (a zero denominator reverses nothing).</summary>
    private readonly record struct Share(Int128 Returned, Int128 Whole)
    {
        public long Of(long points) => Whole == 0 ? 0 : (long)(points * Returned / Whole);
    }

    /// <summary>
    /// What a return of <paramref name="returnedNowMinor"/> takes back of money <paramref name="givenMinor"/>
    /// that a purchase of <paramref name="amountMinor"/> moved (its share to a cause, the store credit
    /// it was paid with), after <paramref name="returnedBeforeMinor"/> was returned before: the share of
    /// the money returned so far, rounded down, less what earlier returns took. Partial returns never
    /// take back more than was moved; returning all takes back all.
    /// </summary>
    public static long TakenBack(long givenMinor, long amountMinor, long returnedBeforeMinor, long returnedNowMinor)
    {
        if (givenMinor <= 0 || amountMinor <= 0)
        {
            return 0;
        }

        long after = Math.Min(amountMinor, checked(returnedBeforeMinor + returnedNowMinor));
        return (long)(((Int128)givenMinor * after / amountMinor) - ((Int128)givenMinor * Math.Min(amountMinor, returnedBeforeMinor) / amountMinor));
    }

    /// <summary>How much of <paramref name="purchase"/> its returns so far (<paramref name="progress"/>, null for none) gave back, and what is left.</summary>
    public static ReturnStatus Status(LedgerEntry purchase, ReturnProgress? progress)
    {
        long returnedMinor = progress?.AmountReturnedMinor ?? 0;
        long reversed = 0;
        foreach (long points in progress?.Reversed ?? [])
        {
            reversed = checked(reversed + points);
        }

        LineStatus[] lines = [.. (purchase.DetailsAs<EarnDetails>()?.Lines ?? []).Select(l =>
            new LineStatus(l.Sku, l.Quantity, progress?.SkuReturnedQuantity.GetValueOrDefault(l.Sku) ?? 0))];
        long returnable = Math.Max(0, checked(purchase.AmountMinor - returnedMinor));

        // Returned by lines, a purchase is complete when every unit came back, though its lines may not add up to its amount (tax).
        bool allLines = lines.Length > 0 && progress?.ByLines == true && lines.All(l => l.Quantity > 0 && l.ReturnedQuantity >= l.Quantity);
        return new ReturnStatus(returnedMinor, allLines ? 0 : returnable, reversed, Math.Max(0, checked(purchase.Points.Value - reversed)), lines, returnable == 0 || allLines);
    }

    /// <summary>The reversal, or an error message when the return does not fit the purchase.</summary>
    public static ReversalResult? Compute(LedgerEntry original, ReturnProgress? progress, PurchaseReturn request, out string? error)
    {
        EarnDetails details = original.DetailsAs<EarnDetails>() ?? new EarnDetails { Components = [new BreakdownComponent(ComponentKind.Base, "base", original.Points.Value)] };
        bool byLines = request.Lines.Count > 0;
        error = progress is not null && progress.ByLines != byLines
            ? (byLines ? "this purchase was returned by amount before; return the rest by amount" : "this purchase was returned by lines before; return the rest by lines")
            : request.Amount.Currency != original.Currency
                ? $"currency '{request.Amount.Currency}' does not match the purchase's currency '{original.Currency}'"
                : null;
        if (error is not null)
        {
            return null;
        }

        Func<BreakdownComponent, Share>? shareOf;
        IReadOnlyList<SkuAmount>? lines = null;
        bool full, whole;
        if (byLines)
        {
            shareOf = SharesByLines(details, progress, request, out lines, out full, out whole, out error);
        }
        else
        {
            long after = checked((progress?.AmountReturnedMinor ?? 0) + request.Amount.AmountMinor);
            error = after > original.AmountMinor
                ? $"the return exceeds the purchase: {progress?.AmountReturnedMinor ?? 0} of {original.AmountMinor} minor units were already returned"
                : null;
            shareOf = _ => new Share(after, original.AmountMinor);
            full = whole = after == original.AmountMinor;
        }

        if (shareOf is null || error is not null)
        {
            return null;
        }

        var components = new List<BreakdownComponent>(details.Components.Count);
        long total = 0;
        for (int i = 0; i < details.Components.Count; i++)
        {
            BreakdownComponent c = details.Components[i];
            long before = progress is not null && i < progress.Reversed.Count ? progress.Reversed[i] : 0;
            // A referral reward is not earned by the money of the purchase: it goes back only with
            // all of it (and stays back: a later return of a free line leaves it whole). No
            // return gives points: what was reversed before is never undone.
            long now = Math.Max(0, (c.Kind == ComponentKind.Referral ? (whole ? c.Points : 0) : shareOf(c).Of(c.Points)) - before);
            components.Add(c with { Points = now });
            total = checked(total + now);
        }

        return new ReversalResult(components, total, request.ReturnedAmountMinor, lines, full);
    }

    private static Func<BreakdownComponent, Share>? SharesByLines(
        EarnDetails details, ReturnProgress? progress, PurchaseReturn request, out IReadOnlyList<SkuAmount>? lines, out bool full, out bool whole, out string? error)
    {
        lines = null;
        full = whole = false;
        if (details.Lines is not { Count: > 0 } basket)
        {
            error = "the purchase had no line items; return it by amount";
            return null;
        }

        // Cumulative money returned per SKU, after this return.
        var returnedNow = new Dictionary<string, long>(StringComparer.Ordinal);
        var unitsNow = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (ReturnLine line in request.Lines)
        {
            returnedNow[line.Sku] = checked(returnedNow.GetValueOrDefault(line.Sku) + line.AmountMinor);
            unitsNow[line.Sku] = checked(unitsNow.GetValueOrDefault(line.Sku) + line.Quantity);
        }

        if (ExceedsUnits(basket, progress, unitsNow) is { } tooMany)
        {
            error = tooMany;
            return null;
        }

        var bought = basket.GroupBy(l => l.Sku, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Sum(l => l.AmountMinor), StringComparer.Ordinal);
        var cumulative = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach ((string sku, long now) in returnedNow)
        {
            long already = progress?.SkuReturnedMinor.GetValueOrDefault(sku) ?? 0;
            if (!bought.TryGetValue(sku, out long amount))
            {
                error = $"sku '{sku}' was not part of the purchase";
                return null;
            }

            if (checked(already + now) > amount)
            {
                error = $"the return exceeds the purchase for sku '{sku}': {already} of {amount} minor units were already returned";
                return null;
            }

            cumulative[sku] = already + now;
        }

        foreach ((string sku, long already) in progress?.SkuReturnedMinor ?? System.Collections.ObjectModel.ReadOnlyDictionary<string, long>.Empty)
        {
            cumulative.TryAdd(sku, already);
        }

        // A SKU whose every unit came back is returned whole, whatever the till refunded for it:
        // refunds rounded per unit (three of 3.33 for a line of 10.00) must not leave a share behind.
        Dictionary<string, long> unitsBought = UnitsBought(basket);
        foreach ((string sku, long units) in unitsBought)
        {
            long unitsBack = checked((progress?.SkuReturnedQuantity.GetValueOrDefault(sku) ?? 0) + unitsNow.GetValueOrDefault(sku));
            if (units > 0 && unitsBack >= units)
            {
                cumulative[sku] = bought[sku];
            }
        }

        lines = [.. returnedNow.Select(r => new SkuAmount(r.Key, r.Value, 0, "", unitsNow[r.Key]))];
        // Full once: a return after the purchase was whole already (a free line's unit, or a unit
        // given back without money after its line's money came back) completes nothing, and gives
        // back no points spent, store credit or reward again.
        whole = bought.All(b => cumulative.GetValueOrDefault(b.Key) == b.Value);
        full = whole && !WholeBefore(bought, unitsBought, progress);
        error = null;
        return Shares(basket, cumulative);
    }

    /// <summary>Whether the returns before this one had returned the purchase whole, by the same rule as this one's (every SKU's money, or every unit of it).</summary>
    private static bool WholeBefore(Dictionary<string, long> bought, Dictionary<string, long> units, ReturnProgress? progress)
    {
        if (progress is null)
        {
            return false;
        }

        return bought.All(b => progress.SkuReturnedMinor.GetValueOrDefault(b.Key) == b.Value
            || (units[b.Key] > 0 && progress.SkuReturnedQuantity.GetValueOrDefault(b.Key) >= units[b.Key]));
    }

    /// <summary>Units bought of each SKU (0 for purchases recorded before quantities were kept).</summary>
    private static Dictionary<string, long> UnitsBought(IReadOnlyList<SkuAmount> basket)
    {
        var units = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (SkuAmount line in basket)
        {
            units[line.Sku] = checked(units.GetValueOrDefault(line.Sku) + line.Quantity);
        }

        return units;
    }

    /// <summary>
    /// Why the return gives back more units of a SKU than the purchase had, counting earlier
    /// returns; null when it does not. Purchases recorded before quantities were kept (quantity 0)
    /// are bounded by money only.
    /// </summary>
    private static string? ExceedsUnits(IReadOnlyList<SkuAmount> basket, ReturnProgress? progress, Dictionary<string, int> unitsNow)
    {
        Dictionary<string, long> units = UnitsBought(basket);
        foreach ((string sku, int now) in unitsNow)
        {
            long bought = units.GetValueOrDefault(sku);
            long already = progress?.SkuReturnedQuantity.GetValueOrDefault(sku) ?? 0;
            if (bought > 0 && already + now > bought)
            {
                return $"the return exceeds the purchase for sku '{sku}': {now} returned now and {already} before, of {bought} units bought";
            }
        }

        return null;
    }

    /// <summary>
    /// The share of each component given the money returned per SKU so far. A SKU's returned money
    /// fills its basket entries in order (a SKU normally sits in one component).
    /// </summary>
    private static Func<BreakdownComponent, Share> Shares(IReadOnlyList<SkuAmount> basket, Dictionary<string, long> cumulative)
    {
        var remaining = new Dictionary<string, long>(cumulative, StringComparer.Ordinal);
        var groupWhole = new Dictionary<string, Int128>(StringComparer.Ordinal);
        var groupReturned = new Dictionary<string, Int128>(StringComparer.Ordinal);
        Int128 weightedWhole = 0, weightedReturned = 0, moneyWhole = 0, moneyReturned = 0;
        foreach (SkuAmount entry in basket)
        {
            long back = Math.Min(remaining.GetValueOrDefault(entry.Sku), entry.AmountMinor);
            remaining[entry.Sku] = remaining.GetValueOrDefault(entry.Sku) - back;
            groupWhole[entry.Component] = groupWhole.GetValueOrDefault(entry.Component) + entry.AmountMinor;
            groupReturned[entry.Component] = groupReturned.GetValueOrDefault(entry.Component) + back;
            weightedWhole += (Int128)entry.AmountMinor * entry.MultiplierBp;
            weightedReturned += (Int128)back * entry.MultiplierBp;
            moneyWhole += entry.AmountMinor;
            moneyReturned += back;
        }

        // A basket of excluded lines only has no weight, yet a campaign's flat bonus may still have
        // been earned on its money: such a bonus goes back in the share of the money returned.
        Share bonus = weightedWhole > 0 ? new Share(weightedReturned, weightedWhole) : new Share(moneyReturned, moneyWhole);
        return c => c.Kind is ComponentKind.Base or ComponentKind.Product
            ? new Share(groupReturned.GetValueOrDefault(c.Code), groupWhole.GetValueOrDefault(c.Code))
            : bonus;
    }
}
