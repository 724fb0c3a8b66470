namespace Loyalty;

/// <summary>One returned line: which SKU, how many, and the money refunded for it.</summary>
[GenerateSerializer, Immutable]
public sealed record ReturnLine(
    [property: Id(0)] string Sku,
    [property: Id(1)] int Quantity,
    [property: Id(2)] long AmountMinor);

/// <summary>
/// A return of (part of) an earlier purchase of the same member. Either it lists the returned
/// lines, or it states a refunded amount; the transaction id is its own idempotency key.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record PurchaseReturn(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] string ProgramId,
    [property: Id(2)] string MemberId,
    [property: Id(3)] string OriginalTransactionId,
    [property: Id(4)] string StoreId,
    [property: Id(5)] Money Amount,
    [property: Id(6)] DateTimeOffset OccurredAt,
    [property: Id(7)] IReadOnlyList<ReturnLine> Lines)
{
    /// <summary>The money returned: the sum of the lines when lines are listed, otherwise the amount.</summary>
    public long ReturnedAmountMinor => Lines.Count > 0 ? Lines.Sum(l => l.AmountMinor) : Amount.AmountMinor;

    /// <summary>Returns null when the return is well-formed, otherwise a message naming the first bad field.</summary>
    public string? Check(DateTimeOffset now)
    {
        string? error = LoyaltyIds.Check(TransactionId, "transaction_id")
            ?? LoyaltyIds.Check(ProgramId, "program_id")
            ?? LoyaltyIds.Check(MemberId, "member_id")
            ?? LoyaltyIds.Check(OriginalTransactionId, "original_transaction_id")
            ?? LoyaltyIds.Check(StoreId, "store_id");
        if (error is not null)
        {
            return error;
        }

        if (TransactionId == OriginalTransactionId)
        {
            return "transaction_id must differ from original_transaction_id";
        }

        if (!CurrencyCodes.IsWellFormed(Amount.Currency))
        {
            return "currency must be a three-letter ISO 4217 code such as USD";
        }

        if (OccurredAt == default || OccurredAt > now + Limits.PurchaseFutureSkewMax)
        {
            return "occurred_at is required and may not lie in the future";
        }

        if (OccurredAt < Limits.OccurredAtMin)
        {
            return "occurred_at is before 2000-01-01";
        }

        return Lines.Count == 0 ? CheckAmountOnly() : CheckLines();
    }

    /// <summary>The content fingerprint; a resend must match it to count as the same return.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("return");
        f.Add(TransactionId);
        f.Add(MemberId);
        f.Add(OriginalTransactionId);
        f.Add(StoreId);
        f.Add(Amount.AmountMinor);
        f.Add(Amount.Currency);
        f.Add(OccurredAt.UtcTicks);
        f.Add(Lines.Count);
        foreach (ReturnLine line in Lines)
        {
            f.Add(line.Sku);
            f.Add(line.Quantity);
            f.Add(line.AmountMinor);
        }

        return f.Value;
    }

    private string? CheckAmountOnly() =>
        Amount.AmountMinor is <= 0 or > Limits.PurchaseAmountMinorMax
            ? $"a return needs lines or an amount_minor of 1..{Limits.PurchaseAmountMinorMax}"
            : null;

    private string? CheckLines()
    {
        if (Lines.Count > Limits.LineItemsMax)
        {
            return $"lines has more than {Limits.LineItemsMax} entries";
        }

        long total = 0;
        for (int i = 0; i < Lines.Count; i++)
        {
            ReturnLine line = Lines[i];
            string? error = LoyaltyIds.Check(line.Sku, $"lines[{i}].sku", Limits.CodeLengthMax);
            if (error is not null)
            {
                return error;
            }

            if (line.Quantity is <= 0 or > Limits.LineQuantityMax)
            {
                return $"lines[{i}].quantity must be 1..{Limits.LineQuantityMax}";
            }

            // 0 is a unit given back without money: a free line (a gift with the purchase) comes
            // back with the rest of the basket, and the units count towards its full return.
            if (line.AmountMinor is < 0 or > Limits.PurchaseAmountMinorMax)
            {
                return $"lines[{i}].amount_minor must be 0..{Limits.PurchaseAmountMinorMax}";
            }

            total = checked(total + line.AmountMinor);
        }

        return Amount.AmountMinor != 0 && Amount.AmountMinor != total
            ? "amount_minor must be 0 or the sum of the returned lines"
            : null;
    }
}

/// <summary>The engine's answer to a return.</summary>
[GenerateSerializer, Immutable]
public sealed record ReturnResult(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] AccrualStatus Status,
    [property: Id(2)] Points Reversed,
    [property: Id(3)] Points Balance,
    [property: Id(4)] Points Pending,
    [property: Id(5)] long Sequence,
    [property: Id(6)] ReturnDetails? Details,
    [property: Id(7)] LoyaltyError Error,
    [property: Id(8)] string? ErrorMessage) : IChangeOutcome
{
    /// <summary>A refusal with the reason.</summary>
    public static ReturnResult Reject(string transactionId, LoyaltyError error, string message) =>
        new(transactionId, AccrualStatus.Rejected, Points.Zero, Points.Zero, Points.Zero, 0, null, error, message);
}

/// <summary>A manual change of a member's points by support staff; the reason is mandatory.</summary>
[GenerateSerializer, Immutable]
public sealed record Adjustment(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] Points Points,
    [property: Id(2)] string Reason)
{
    /// <summary>Returns null when the adjustment is well-formed, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (LoyaltyIds.Check(TransactionId, "transaction_id") is { } error)
        {
            return error;
        }

        // Compared without Math.Abs, which overflows on long.MinValue.
        if (Points.Value is 0 or < -Limits.AdjustmentPointsMax or > Limits.AdjustmentPointsMax)
        {
            return $"points must be non-zero and at most {Limits.AdjustmentPointsMax} either way";
        }

        return FreeText.Check(Reason, "reason", Limits.ReasonLengthMax);
    }

    /// <summary>The content fingerprint; a resend must match it.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("adjust");
        f.Add(TransactionId);
        f.Add(Points.Value);
        f.Add(Reason);
        return f.Value;
    }
}

/// <summary>
/// A member's answer to a survey ("how likely are you to recommend us", 0..10), for NPS. The
/// comment is personal data: it is erased with the member. Idempotent by its id, which shares the
/// program's transaction ids.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record Feedback(
    [property: Id(0)] string FeedbackId,
    [property: Id(1)] int Score,
    [property: Id(2)] string? Comment,
    [property: Id(3)] string? Channel)
{
    /// <summary>The highest score.</summary>
    public const int ScoreMax = 10;

    /// <summary>Returns null when the answer is well-formed, otherwise a message naming the field.</summary>
    public string? Check() =>
        LoyaltyIds.Check(FeedbackId, "feedback_id")
        ?? (Score is < 0 or > ScoreMax ? $"score must be 0..{ScoreMax}" : null)
        ?? (Comment is null ? null : FreeText.Check(Comment, "comment", Limits.CommentLengthMax))
        ?? (Channel is null ? null : LoyaltyIds.Check(Channel, "channel", Limits.CodeLengthMax));

    /// <summary>The content fingerprint; a resend must match it.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("feedback");
        f.Add(FeedbackId);
        f.Add(Score);
        f.Add(Comment ?? "");
        f.Add(Channel ?? "");
        return f.Value;
    }
}
