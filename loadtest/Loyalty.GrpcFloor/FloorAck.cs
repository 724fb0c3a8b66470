using V1 = Loyalty.Api.V1;

namespace Loyalty.GrpcFloor;

/// <summary>
/// One acknowledgement message filled again for each purchase, as the engine's stream reuses its
/// own, with what the engine's answer to a purchase under the load tester's plain rules holds
/// (a breakdown with a base and a product component), so that the wire carries and the client
/// parses an answer of the engine's size.
/// </summary>
internal sealed class FloorAck
{
    private readonly V1.PurchaseAck _ack = new() { Status = V1.AckStatus.Accepted, ProgramVersion = 1 };
    private readonly V1.BreakdownComponent _base = new() { Kind = V1.ComponentKind.Base };
    private readonly V1.BreakdownComponent _product = new() { Kind = V1.ComponentKind.Product, Code = "category:groceries" };

    public FloorAck()
    {
        _ack.Breakdown = new V1.Breakdown { Components = { _base, _product }, TierBefore = "", TierAfter = "" };
    }

    /// <summary>The answer to <paramref name="purchase"/>, in this message: valid until the next call.</summary>
    public V1.PurchaseAck Fill(V1.Purchase purchase)
    {
        long points = purchase.AmountMinor / 100;
        _ack.TransactionId = purchase.TransactionId;
        _ack.PointsEarned = points;
        _ack.Balance = points;
        _ack.Sequence = 2;
        _ack.Breakdown.BasePoints = points;
        _base.Points = points / 2;
        _product.Points = points - (points / 2);
        return _ack;
    }
}
