using System.Threading.Channels;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.GrpcFloor;

/// <summary>
/// Answers every purchase at once: accepted, a point per currency unit, nothing kept. Ingest has
/// the shape of the engine gateway's (a reading loop that takes an in-flight slot per purchase;
/// answers handed, after <see cref="FloorSettings.Hops"/> trips through the thread pool as the
/// member's answer arrives on another thread, to one writer that fills one reused message of the
/// engine's size) without its grain call, so that what is measured is the wire, the server and
/// the client. IngestBatches answers each batch in turn on the reading thread.
/// </summary>
internal sealed class FloorPurchases(FloorSettings settings) : V1.Purchases.PurchasesBase
{
    public override Task<V1.PurchaseAck> Accrue(V1.Purchase request, ServerCallContext context) => Task.FromResult(new FloorAck().Fill(request));

    public override async Task Ingest(IAsyncStreamReader<V1.Purchase> requestStream, IServerStreamWriter<V1.PurchaseAck> responseStream, ServerCallContext context)
    {
        using var slots = new SemaphoreSlim(settings.InFlightMax, settings.InFlightMax);
        // Cancelled by the client, or by the writer when a write fails, so that the reader stops waiting for slots that will never be freed.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        Channel<V1.Purchase> answers = Channel.CreateUnbounded<V1.Purchase>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
        Task writer = WriteAsync(answers.Reader, responseStream, slots, stop, context.CancellationToken);
        try
        {
            while (await requestStream.MoveNext(stop.Token))
            {
                await slots.WaitAsync(stop.Token);
                Hand(requestStream.Current, answers.Writer, settings.Hops);
            }

            // The client has finished sending: every purchase taken is answered before the call ends.
            for (int i = 0; i < settings.InFlightMax; i++)
            {
                await slots.WaitAsync(stop.Token);
            }
        }
        finally
        {
            answers.Writer.TryComplete();
            await writer;
        }
    }

    public override async Task IngestBatches(IAsyncStreamReader<V1.PurchaseBatch> requestStream, IServerStreamWriter<V1.PurchaseBatchAck> responseStream, ServerCallContext context)
    {
        while (await requestStream.MoveNext(context.CancellationToken))
        {
            var answer = new V1.PurchaseBatchAck();
            answer.Acks.AddRange(requestStream.Current.Purchases.Select(p => new FloorAck().Fill(p)));
            await responseStream.WriteAsync(answer);
        }
    }

    /// <summary>Queues <paramref name="purchase"/> for the writer after <paramref name="hops"/> hand-overs through the thread pool.</summary>
    private static void Hand(V1.Purchase purchase, ChannelWriter<V1.Purchase> answers, int hops)
    {
        if (hops == 0)
        {
            answers.TryWrite(purchase);
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(static s => Hand(s.Purchase, s.Answers, s.Hops - 1), (Purchase: purchase, Answers: answers, Hops: hops), preferLocal: false);
    }

    /// <summary>
    /// Answers in the order handed over; a failed write ends the stream (the reader is stopped
    /// through <paramref name="stop"/>, and the failure is the call's). A client that went away
    /// (<paramref name="clientGone"/>) is not a failure of the floor's. Each write takes the
    /// stream's token, as the gateway's do, so that it registers and removes the same callback.
    /// </summary>
    private static async Task WriteAsync(ChannelReader<V1.Purchase> answers, IServerStreamWriter<V1.PurchaseAck> responseStream, SemaphoreSlim slots, CancellationTokenSource stop, CancellationToken clientGone)
    {
        var ack = new FloorAck();
        try
        {
            await foreach (V1.Purchase purchase in answers.ReadAllAsync())
            {
                await responseStream.WriteAsync(ack.Fill(purchase), stop.Token);
                slots.Release();
            }
        }
        catch (Exception) when (clientGone.IsCancellationRequested)
        {
            // The client cancelled (its flag is set before the linked source hears of it): nothing is left to answer.
        }
        catch
        {
            await stop.CancelAsync();
            throw;
        }
    }
}
