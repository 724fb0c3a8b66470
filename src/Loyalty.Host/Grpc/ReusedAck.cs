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

/// <summary>
/// The one answer message of a batch stream, filled again for each batch: each of the batch's first
/// <see cref="PositionsMax"/> positions keeps its own <see cref="ReusedAck"/>, since a batch's
/// answer holds all its acks at once; the rest are made anew. Made anew, a batch's acks cost each
/// purchase about 700 bytes more than on a one-purchase stream.
/// </summary>
internal sealed class ReusedBatchAck
{
    /// <summary>
    /// Most positions that keep a reused ack. Each holds an ack, a breakdown and the last answer's
    /// strings, about a kilobyte, for as long as the stream is open; so a stream holds at most
    /// about 128 KB for them however large its batches (up to <see cref="Limits.IngestBatchPurchasesMax"/>).
    /// </summary>
    public const int PositionsMax = 128;

    private readonly V1.PurchaseBatchAck _answer = new();
    private readonly List<ReusedAck> _positions = [];

    /// <summary>How many positions keep a reused ack: as many as the largest batch answered, at most <see cref="PositionsMax"/>.</summary>
    public int PositionsHeld => _positions.Count;

    /// <summary>Empties the answer for the next batch; valid until the next call.</summary>
    public V1.PurchaseBatchAck Begin()
    {
        _answer.Acks.Clear();
        return _answer;
    }

    /// <summary>Adds the next purchase's answer to the batch's message (see <see cref="PurchasesService.MessageOf"/>).</summary>
    public void Add(PurchasesService.StreamAck ack, ILogger logger)
    {
        int position = _answer.Acks.Count;
        ReusedAck? reused = ack.Refusal is null && position < PositionsMax ? At(position) : null;
        _answer.Acks.Add(PurchasesService.MessageOf(ack, reused, logger));
    }

    private ReusedAck At(int position)
    {
        while (_positions.Count <= position)
        {
            _positions.Add(new ReusedAck());
        }

        return _positions[position];
    }
}
