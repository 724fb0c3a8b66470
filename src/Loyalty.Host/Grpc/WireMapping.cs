using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Small pure functions between wire messages and domain records.</summary>
internal static class WireMapping
{
    /// <summary>The gRPC status for a domain refusal.</summary>
    public static StatusCode ToStatusCode(LoyaltyError error) => error switch
    {
        LoyaltyError.InvalidArgument => StatusCode.InvalidArgument,
        LoyaltyError.NotFound => StatusCode.NotFound,
        LoyaltyError.AlreadyExists => StatusCode.AlreadyExists,
        LoyaltyError.FailedPrecondition => StatusCode.FailedPrecondition,
        LoyaltyError.Unavailable => StatusCode.Unavailable,
        _ => throw new ArgumentOutOfRangeException(nameof(error), error, "Not a refusal."),
    };

    /// <summary>An exception carrying the status for a domain refusal.</summary>
    public static RpcException ToRpcException(LoyaltyError error, string? message) =>
        new(new Status(ToStatusCode(error), message ?? error.ToString()));

    /// <summary>
    /// Maps a purchase message, or returns the reason it cannot be: ids, amounts, line items and
    /// the timestamp are all checked here, before any grain is called.
    /// </summary>
    public static Purchase? ToPurchase(V1.Purchase message, DateTimeOffset now, out string? error)
    {
        if (message.OccurredAt is null)
        {
            error = "occurred_at is required";
            return null;
        }

        DateTimeOffset occurredAt;
        try
        {
            occurredAt = message.OccurredAt.ToDateTimeOffset();
        }
        catch (InvalidOperationException)
        {
            error = "occurred_at is out of range";
            return null;
        }

        if (message.LineItems.Count > Limits.LineItemsMax)
        {
            error = $"line_items has more than {Limits.LineItemsMax} entries";
            return null;
        }

        var lines = new LineItem[message.LineItems.Count];
        for (int i = 0; i < lines.Length; i++)
        {
            V1.LineItem line = message.LineItems[i];
            lines[i] = new LineItem(line.Sku, line.Category, line.Quantity, line.AmountMinor);
        }

        var purchase = new Purchase(
            message.TransactionId, message.ProgramId, message.MemberId, message.StoreId,
            new Money(message.AmountMinor, message.Currency), occurredAt, lines);
        error = purchase.Check(now);
        return error is null ? purchase : null;
    }

    /// <summary>The acknowledgement for an accrual result.</summary>
    public static V1.PurchaseAck ToAck(AccrualResult result) => new()
    {
        TransactionId = result.TransactionId,
        Status = result.Status switch
        {
            AccrualStatus.Accepted => V1.AckStatus.Accepted,
            AccrualStatus.Duplicate => V1.AckStatus.Duplicate,
            _ => V1.AckStatus.Rejected,
        },
        PointsEarned = result.Earned.Value,
        Balance = result.Balance.Value,
        Sequence = result.Sequence,
        ErrorCode = result.Error == LoyaltyError.None ? "" : StatusName(ToStatusCode(result.Error)),
        ErrorMessage = result.ErrorMessage ?? "",
    };

    /// <summary>A rejection acknowledgement for a purchase that never reached a grain.</summary>
    public static V1.PurchaseAck Rejected(string transactionId, StatusCode code, string message) => new()
    {
        TransactionId = transactionId,
        Status = V1.AckStatus.Rejected,
        ErrorCode = StatusName(code),
        ErrorMessage = message,
    };

    /// <summary>The canonical upper-case name of a status code, e.g. INVALID_ARGUMENT.</summary>
    public static string StatusName(StatusCode code) => code switch
    {
        StatusCode.InvalidArgument => "INVALID_ARGUMENT",
        StatusCode.NotFound => "NOT_FOUND",
        StatusCode.AlreadyExists => "ALREADY_EXISTS",
        StatusCode.FailedPrecondition => "FAILED_PRECONDITION",
        StatusCode.Unavailable => "UNAVAILABLE",
        StatusCode.ResourceExhausted => "RESOURCE_EXHAUSTED",
        _ => code.ToString().ToUpperInvariant(),
    };

    /// <summary>The member message.</summary>
    public static V1.Member ToMessage(MemberView m)
    {
        var message = new V1.Member
        {
            ProgramId = m.ProgramId,
            MemberId = m.MemberId,
            Balance = m.Balance.Value,
            Tier = m.Tier,
            ReferredBy = m.ReferredBy ?? "",
            LifetimeEarned = m.LifetimeEarned.Value,
            EnrolledAt = Timestamp.FromDateTimeOffset(m.EnrolledAt),
            LastSequence = m.LastSequence,
        };
        message.Referrals.AddRange(m.Referrals);
        return message;
    }

    /// <summary>The program message.</summary>
    public static V1.Program ToMessage(ProgramConfig p) => new()
    {
        ProgramId = p.ProgramId,
        Name = p.Settings.Name,
        Currency = p.Settings.Currency,
        CurrencyExponent = p.Settings.CurrencyExponent,
        EarnPointsPerUnit = p.Settings.EarnPointsPerUnit,
        Version = p.Version,
    };

    /// <summary>The ledger entry message.</summary>
    public static V1.LedgerEntry ToMessage(LedgerEntry e) => new()
    {
        Sequence = e.Sequence,
        Kind = e.Kind switch
        {
            LedgerEntryKind.Enrol => V1.LedgerEntryKind.Enrol,
            LedgerEntryKind.Earn => V1.LedgerEntryKind.Earn,
            LedgerEntryKind.ReferralLink => V1.LedgerEntryKind.ReferralLink,
            _ => V1.LedgerEntryKind.Unspecified,
        },
        Points = e.Points.Value,
        TransactionId = e.TransactionId ?? "",
        StoreId = e.StoreId ?? "",
        AmountMinor = e.AmountMinor,
        Currency = e.Currency ?? "",
        Reason = e.Reason ?? (e.Kind == LedgerEntryKind.ReferralLink ? "referred " + e.Reference : ""),
        OccurredAt = Timestamp.FromDateTimeOffset(e.OccurredAt),
        RecordedAt = Timestamp.FromDateTimeOffset(e.RecordedAt),
    };
}
