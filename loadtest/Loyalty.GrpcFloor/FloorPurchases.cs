using System.Threading.Channels;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.GrpcFloor;

/// <summary>
/// Answers every purchase at once: accepted, a point per currency unit, nothing kept. The streams
/// have the engine gateway's shape (a reading loop; answers queued to one writer, which runs on
/// the thread that queues an answer) without its grain call, so that what is measured is the
/// wire, the server and the client.
/// </summary>
internal sealed class FloorPurchases(FloorSettings settings) : V1.Purchases.PurchasesBase
{
    /// <summary>Purchases of one stream read and not yet answered, at most (as the gateway's in-flight limit).</summary>
    private const int InFlightMax = 4096;

    public override Task<V1.PurchaseAck> Accrue(V1.Purchase request, ServerCallContext context) => Task.FromResult(Answer(request));

    public override async Task Ingest(IAsyncStreamReader<V1.Purchase> requestStream, IServerStreamWriter<V1.PurchaseAck> responseStream, ServerCallContext context)
    {
        using var slots = new SemaphoreSlim(InFlightMax, InFlightMax);
        Channel<V1.PurchaseAck> acks = Channel.CreateUnbounded<V1.PurchaseAck>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
        Task writer = WriteAsync(acks.Reader, responseStream, slots);
        try
        {
            while (await requestStream.MoveNext(context.CancellationToken))
            {
                await slots.WaitAsync(context.CancellationToken);
                Hand(Answer(requestStream.Current), acks.Writer, settings.Hops);
            }

            for (int i = 0; i < InFlightMax; i++)
            {
                await slots.WaitAsync(context.CancellationToken);
            }
        }
        finally
        {
            acks.Writer.TryComplete();
            await writer;
        }
    }

    public override async Task IngestBatches(IAsyncStreamReader<V1.PurchaseBatch> requestStream, IServerStreamWriter<V1.PurchaseBatchAck> responseStream, ServerCallContext context)
    {
        while (await requestStream.MoveNext(context.CancellationToken))
        {
            var answer = new V1.PurchaseBatchAck();
            answer.Acks.AddRange(requestStream.Current.Purchases.Select(Answer));
            await responseStream.WriteAsync(answer);
        }
    }

    private static V1.PurchaseAck Answer(V1.Purchase purchase) => new()
    {
        TransactionId = purchase.TransactionId,
        Status = V1.AckStatus.Accepted,
        PointsEarned = purchase.AmountMinor / 100,
        Balance = purchase.AmountMinor / 100,
        Sequence = 1,
    };

    /// <summary>Queues <paramref name="ack"/> for the writer after <paramref name="hops"/> hand-overs through the thread pool.</summary>
    private static void Hand(V1.PurchaseAck ack, ChannelWriter<V1.PurchaseAck> acks, int hops)
    {
        if (hops == 0)
        {
            acks.TryWrite(ack);
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(static s => Hand(s.Ack, s.Acks, s.Hops - 1), (Ack: ack, Acks: acks, Hops: hops), preferLocal: false);
    }

    private static async Task WriteAsync(ChannelReader<V1.PurchaseAck> acks, IServerStreamWriter<V1.PurchaseAck> responseStream, SemaphoreSlim slots)
    {
        await foreach (V1.PurchaseAck ack in acks.ReadAllAsync())
        {
            await responseStream.WriteAsync(ack);
            slots.Release();
        }
    }
}
