namespace Loyalty;

/// <summary>The condition an inspection grades a traded-in item in.</summary>
public enum TradeInCondition
{
    /// <summary>Like new.</summary>
    LikeNew = 1,

    /// <summary>Good: signs of use.</summary>
    Good = 2,

    /// <summary>Worn but functional.</summary>
    Worn = 3,

    /// <summary>Not accepted: no credit.</summary>
    Rejected = 4,
}

/// <summary>The store credit one category of item in one condition is worth.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInRate(
    [property: Id(0)] string Category,
    [property: Id(1)] TradeInCondition Condition,
    [property: Id(2)] long CreditMinor);

/// <summary>
/// Trade-in credit (Patagonia Worn Wear): a member brings used items; each waits for inspection,
/// and an accepted item gives the store credit the table sets for its category and graded
/// condition, into the member's store-credit wallet (money, spendable as a tender at the till).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TradeInPolicy([property: Id(0)] IReadOnlyList<TradeInRate> Rates)
{
    /// <summary>Whether the table has a rate for the category.</summary>
    public bool Takes(string category) => Rates.Any(r => r.Category == category);

    /// <summary>The credit for the category in the condition; null when the table has none.</summary>
    public long? CreditOf(string category, TradeInCondition condition) =>
        Rates.FirstOrDefault(r => r.Category == category && r.Condition == condition)?.CreditMinor;

    /// <summary>Returns null when the table is valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (Rates.Count is 0 or > Limits.TradeInRatesMax)
        {
            return $"trade_in.rates must list 1..{Limits.TradeInRatesMax} rates";
        }

        for (int i = 0; i < Rates.Count; i++)
        {
            TradeInRate rate = Rates[i];
            string field = $"trade_in.rates[{i}]";
            if (LoyaltyIds.Check(rate.Category, field + ".category", Limits.CodeLengthMax) is { } error)
            {
                return error;
            }

            if (rate.Condition is < TradeInCondition.LikeNew or > TradeInCondition.Worn)
            {
                return $"{field}.condition must be LIKE_NEW, GOOD or WORN";
            }

            if (rate.CreditMinor is < 0 or > Limits.TradeInCreditMinorMax)
            {
                return $"{field}.credit_minor must be 0..{Limits.TradeInCreditMinorMax}";
            }

            if (Rates.Take(i).Any(r => r.Category == rate.Category && r.Condition == rate.Condition))
            {
                return $"{field} repeats {rate.Category} in condition {rate.Condition}";
            }
        }

        return null;
    }
}

/// <summary>An item handed in for trade-in credit; idempotent by its id.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeIn(
    [property: Id(0)] string TradeInId,
    [property: Id(1)] string Category,
    [property: Id(2)] string? StoreId)
{
    /// <summary>Returns null when well formed, otherwise a message naming the field.</summary>
    public string? Check() =>
        LoyaltyIds.Check(TradeInId, "trade_in_id") ?? LoyaltyIds.Check(Category, "category", Limits.CodeLengthMax)
        ?? (StoreId is null ? null : LoyaltyIds.Check(StoreId, "store_id"));

    /// <summary>Identifies the submission's content, to tell a resend from a reuse of its id.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("trade-in");
        f.Add(TradeInId);
        f.Add(Category);
        f.Add(StoreId);
        return f.Value;
    }
}

/// <summary>What a trade-in entry records: the item's category and, once inspected, its condition.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInRecord(
    [property: Id(0)] string Category,
    [property: Id(1)] TradeInCondition? Condition = null);

/// <summary>A trade-in waiting for inspection.</summary>
[GenerateSerializer, Immutable]
public sealed record OpenTradeIn(
    [property: Id(0)] string TradeInId,
    [property: Id(1)] string Category,
    [property: Id(2)] DateTimeOffset SubmittedAt,
    [property: Id(3)] string? StoreId = null);

/// <summary>Where a trade-in stands.</summary>
public enum TradeInStatus
{
    /// <summary>Waiting for inspection.</summary>
    Pending = 1,

    /// <summary>Accepted: its credit is in the wallet.</summary>
    Accepted = 2,

    /// <summary>Rejected at inspection: no credit.</summary>
    Rejected = 3,
}

/// <summary>The answer to a trade-in change.</summary>
[GenerateSerializer, Immutable]
public sealed record TradeInResult(
    [property: Id(0)] string TradeInId,
    [property: Id(1)] TradeInStatus TradeInStatus,
    [property: Id(2)] string Category,
    [property: Id(3)] TradeInCondition? Condition,
    [property: Id(4)] long CreditMinor,
    [property: Id(5)] long WalletMinor,
    [property: Id(6)] AccrualStatus Status,
    [property: Id(7)] long Sequence,
    [property: Id(8)] LoyaltyError Error,
    [property: Id(9)] string? ErrorMessage)
{
    /// <summary>A refusal with the reason.</summary>
    public static TradeInResult Reject(string tradeInId, LoyaltyError error, string message) =>
        new(tradeInId, TradeInStatus.Pending, "", null, 0, 0, AccrualStatus.Rejected, 0, error, message);
}
