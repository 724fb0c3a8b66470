namespace Loyalty;

/// <summary>One line of a basket; a value, so that a purchase's lines are one array rather than an object each.</summary>
[GenerateSerializer, Immutable]
public readonly record struct LineItem(
    [property: Id(0)] string Sku,
    [property: Id(1)] string Category,
    [property: Id(2)] int Quantity,
    [property: Id(3)] long AmountMinor);

/// <summary>A purchase as the till reports it. The transaction id is the idempotency key.</summary>
[GenerateSerializer, Immutable]
public sealed record Purchase(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] string ProgramId,
    [property: Id(2)] string MemberId,
    [property: Id(3)] string StoreId,
    [property: Id(4)] Money Amount,
    [property: Id(5)] DateTimeOffset OccurredAt,
    [property: Id(6)] IReadOnlyList<LineItem> LineItems,
    [property: Id(7)] SalesChannel Channel = SalesChannel.Unspecified,
    [property: Id(8)] string? Tender = null,
    [property: Id(9)] string? RedeemRewardId = null,
    [property: Id(10)] int RedeemQuantity = 0,
    [property: Id(11)] long WalletMinor = 0)
{
    /// <summary>
    /// Returns null when the purchase is well-formed, otherwise a message naming the first bad
    /// field. <paramref name="now"/> bounds how far in the future the timestamp may be.
    /// </summary>
    public string? Check(DateTimeOffset now)
    {
        string? error = LoyaltyIds.Check(TransactionId, "transaction_id")
            ?? LoyaltyIds.Check(ProgramId, "program_id")
            ?? LoyaltyIds.Check(MemberId, "member_id")
            ?? LoyaltyIds.Check(StoreId, "store_id");
        if (error is not null)
        {
            return error;
        }

        if (Amount.AmountMinor <= 0 || Amount.AmountMinor > Limits.PurchaseAmountMinorMax)
        {
            return $"amount_minor must be 1..{Limits.PurchaseAmountMinorMax}";
        }

        if (!CurrencyCodes.IsWellFormed(Amount.Currency))
        {
            return "currency must be a three-letter ISO 4217 code such as USD";
        }

        if (!Enum.IsDefined(Channel))
        {
            return "channel is not a known sales channel";
        }

        if (Tender is not null && LoyaltyIds.Check(Tender, "tender", Limits.CodeLengthMax) is { } tenderError)
        {
            return tenderError;
        }

        if (RedeemRewardId is not null
            && (LoyaltyIds.Check(RedeemRewardId, "redeem_reward_id", Limits.CodeLengthMax)
                ?? (RedeemQuantity is < 1 or > Limits.RedeemQuantityMax ? $"redeem_quantity must be 1..{Limits.RedeemQuantityMax}" : null)) is { } redeemError)
        {
            return redeemError;
        }

        if (WalletMinor < 0 || WalletMinor > Amount.AmountMinor)
        {
            return "wallet_minor (store credit paid) must be 0..amount_minor";
        }

        if (OccurredAt == default)
        {
            return "occurred_at is required";
        }

        if (OccurredAt > now + Limits.PurchaseFutureSkewMax)
        {
            return "occurred_at is in the future";
        }

        if (OccurredAt < Limits.OccurredAtMin)
        {
            return "occurred_at is before 2000-01-01";
        }

        return CheckLineItems();
    }

    /// <summary>
    /// The content fingerprint: every field that decides what the purchase earns. A resend must
    /// match it exactly to count as the same transaction.
    /// </summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add(TransactionId);
        f.Add(MemberId);
        f.Add(StoreId);
        f.Add(Amount.AmountMinor);
        f.Add(Amount.Currency);
        f.Add(OccurredAt.UtcTicks);
        f.Add((long)Channel);
        f.Add(Tender ?? "");
        f.Add(LineItems.Count);
        // By index: a foreach over the interface would make an enumerator per purchase.
        for (int i = 0; i < LineItems.Count; i++)
        {
            LineItem line = LineItems[i];
            f.Add(line.Sku);
            f.Add(line.Category);
            f.Add(line.Quantity);
            f.Add(line.AmountMinor);
        }

        // Only when present, so purchases paid without store credit keep the fingerprints they always had.
        if (WalletMinor != 0)
        {
            f.Add("wallet");
            f.Add(WalletMinor);
        }

        // Only when present, so purchases without a redemption keep the fingerprints they always had.
        if (RedeemRewardId is not null)
        {
            f.Add(RedeemRewardId);
            f.Add(RedeemQuantity);
        }

        return f.Value;
    }

    private string? CheckLineItems()
    {
        if (LineItems.Count > Limits.LineItemsMax)
        {
            return $"line_items has more than {Limits.LineItemsMax} entries";
        }

        long total = 0;
        for (int i = 0; i < LineItems.Count; i++)
        {
            LineItem line = LineItems[i];
            if (!LoyaltyIds.IsValid(line.Sku, Limits.CodeLengthMax))
            {
                return LoyaltyIds.Check(line.Sku, $"line_items[{i}].sku", Limits.CodeLengthMax);
            }

            if (line.Category.Length > 0 && !LoyaltyIds.IsValid(line.Category, Limits.CodeLengthMax))
            {
                return LoyaltyIds.Check(line.Category, $"line_items[{i}].category", Limits.CodeLengthMax);
            }

            if (line.Quantity is <= 0 or > Limits.LineQuantityMax)
            {
                return $"line_items[{i}].quantity must be 1..{Limits.LineQuantityMax}";
            }

            if (line.AmountMinor is < 0 or > Limits.PurchaseAmountMinorMax)
            {
                return $"line_items[{i}].amount_minor must be 0..{Limits.PurchaseAmountMinorMax}";
            }

            total += line.AmountMinor;
        }

        if (LineItems.Count > 0 && total > Amount.AmountMinor)
        {
            return "line_items add up to more than amount_minor";
        }

        return null;
    }
}

/// <summary>How the engine answered a purchase.</summary>
public enum AccrualStatus
{
    /// <summary>Newly accepted and durably recorded.</summary>
    Accepted = 1,

    /// <summary>The same transaction was recorded before; nothing new was earned.</summary>
    Duplicate = 2,

    /// <summary>Refused; nothing was written.</summary>
    Rejected = 3,
}

/// <summary>What every answer to a change of the member's ledger says, whatever the change's kind.</summary>
public interface IChangeOutcome
{
    /// <summary>Accepted, a duplicate, or refused.</summary>
    AccrualStatus Status { get; }

    /// <summary>Why it was refused; <see cref="LoyaltyError.None"/> otherwise.</summary>
    LoyaltyError Error { get; }
}

/// <summary>The engine's answer to one purchase.</summary>
[GenerateSerializer, Immutable]
public sealed record AccrualResult(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] AccrualStatus Status,
    [property: Id(2)] Points Earned,
    [property: Id(3)] Points Balance,
    [property: Id(4)] long Sequence,
    [property: Id(5)] LoyaltyError Error,
    [property: Id(6)] string? ErrorMessage,
    [property: Id(7)] EntryDetails? Details = null,
    [property: Id(8)] DateTimeOffset? AvailableAt = null,
    [property: Id(9)] long ProgramVersion = 0,
    [property: Id(10)] Points Redeemed = default,
    [property: Id(11)] IReadOnlyList<LotUse>? RedeemedLots = null,
    [property: Id(12)] Points Pending = default) : IChangeOutcome
{
    /// <summary>A refusal with the reason.</summary>
    public static AccrualResult Reject(string transactionId, LoyaltyError error, string message) =>
        new(transactionId, AccrualStatus.Rejected, Points.Zero, Points.Zero, 0, error, message);
}
