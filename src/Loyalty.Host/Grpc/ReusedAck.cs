using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>
/// The one acknowledgement message of a purchase stream, filled again for each purchase, with
/// its breakdown and components. A response stream has one writer, and a message is serialized
/// before its write completes, so one set of messages serves every ack of the stream; made anew,
/// an ack and its breakdown were about a tenth of what a purchase allocated.
/// </summary>
internal sealed class ReusedAck
{
    private readonly V1.PurchaseAck _ack = new();
    private readonly V1.Breakdown _breakdown = new();
    private readonly List<V1.BreakdownComponent> _components = [];

    /// <summary>The answer to <paramref name="result"/>, in this stream's message: valid until the next call.</summary>
    public V1.PurchaseAck Fill(AccrualResult result)
    {
        WireMapping.Clear(_ack);
        if (result.Details is not null)
        {
            WireMapping.Clear(_breakdown);
        }

        return WireMapping.FillAck(_ack, result, _breakdown, _components);
    }
}
