using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Grpc.Core;
using Loyalty.Grains;
using Loyalty.Host.Access;
using Microsoft.Extensions.Options;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>
/// Purchase ingestion. The stream keeps up to <see cref="GatewayOptions.StreamInFlightMax"/>
/// purchases in flight: each goes to its member grain at once, and acknowledgements are written
/// back in the order the commits finish, by one writer (a response stream allows one writer).
/// Timestamps are checked against the engine's clock, the one the rules use. On IngestBatches the
/// limit counts purchases at their members, and answers go back one message per batch, in order.
/// </summary>
public sealed partial class PurchasesService(
    GrainReferences<IMemberGrain> members,
    EngineClock clock,
    KeyRegistry keys,
    OpenStreams streams,
    IOptions<GatewayOptions> options,
    ClientFaults faults,
    ILogger<PurchasesService> logger) : V1.Purchases.PurchasesBase
{
    /// <summary>How long a refused stream's writer may take to send the answers already decided.</summary>
    private static readonly TimeSpan WriterGraceMax = TimeSpan.FromSeconds(5);

    private readonly int _inFlightMax = Math.Max(1, options.Value.StreamInFlightMax);
    private readonly TimeSpan _idleMax = options.Value.StreamIdleTimeoutSeconds > 0
        ? TimeSpan.FromSeconds(options.Value.StreamIdleTimeoutSeconds)
        : Timeout.InfiniteTimeSpan;

    /// <inheritdoc />
    public override async Task<V1.PurchaseAck> Accrue(V1.Purchase request, ServerCallContext context)
    {
        Purchase? purchase = WireMapping.ToPurchase(request, clock.GetUtcNow(), out string? error);
        GrainCalls.Require(error);
        AccrualResult result = await GrainCalls.RunAsync(() => Member(purchase!).Accrue(purchase!).AsTask(), logger, "Accrue");
        return result.Status == AccrualStatus.Rejected
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToAck(result);
    }

    /// <inheritdoc />
    public override async Task<V1.PurchaseQuote> Quote(V1.Purchase request, ServerCallContext context)
    {
        // A quote needs no id of its own; a placeholder passes the purchase's checks and is never recorded.
        V1.Purchase basket = request.TransactionId.Length > 0 ? request : new V1.Purchase(request) { TransactionId = "quote" };
        Purchase? purchase = WireMapping.ToPurchase(basket, clock.GetUtcNow(), out string? error);
        GrainCalls.Require(error);
        QuoteResult result = await GrainCalls.RunAsync(() => Member(purchase!).Quote(purchase!), logger, "Quote");
        return result.Error != LoyaltyError.None
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToMessage(result);
    }

    /// <inheritdoc />
    public override async Task<V1.Transaction> GetTransaction(V1.GetTransactionRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id") ?? LoyaltyIds.Check(request.MemberId, "member_id")
            ?? LoyaltyIds.Check(request.TransactionId, "transaction_id"));
        IMemberGrain member = members.Get(request.ProgramId, request.MemberId);
        TransactionView? found = await GrainCalls.RunAsync(() => member.FindTransaction(request.TransactionId), logger, "GetTransaction");
        return found is null
            ? throw new RpcException(new Status(StatusCode.NotFound,
                $"member '{request.MemberId}' of program '{request.ProgramId}' has no transaction '{request.TransactionId}' (or is not enrolled)"))
            : WireMapping.ToMessage(found);
    }

    /// <inheritdoc />
    public override async Task<V1.ReturnAck> Return(V1.ReturnRequest request, ServerCallContext context)
    {
        PurchaseReturn? purchaseReturn = WireMapping.ToReturn(request, clock.GetUtcNow(), out string? error);
        GrainCalls.Require(error);
        IMemberGrain member = members.Get(purchaseReturn!.ProgramId, purchaseReturn.MemberId);
        ReturnResult result = await GrainCalls.RunAsync(() => member.Return(purchaseReturn), logger, "Return");
        return result.Status == AccrualStatus.Rejected
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToAck(result);
    }

    /// <inheritdoc />
    public override async Task Ingest(IAsyncStreamReader<V1.Purchase> requestStream, IServerStreamWriter<V1.PurchaseAck> responseStream, ServerCallContext context)
    {
        CancellationToken cancel = context.CancellationToken;
        Caller caller = Caller.Of(context);
        using OpenStreams.Lease open = OpenStream();
        using var slots = new SemaphoreSlim(_inFlightMax, _inFlightMax);
        // Cancelled when the stream ends in a refusal, so that a writer stuck on a client that does not read stops too.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        // The writer runs on the thread that hands it an ack (the member's answer), instead of
        // waking another pool thread for every purchase: it only serializes and queues the ack
        // for Kestrel's connection, which does the sending.
        Channel<StreamAck> acks = Channel.CreateUnbounded<StreamAck>(new UnboundedChannelOptions
        {
            SingleReader = true,
            AllowSynchronousContinuations = true,
        });
        Task writer = WriteAcksAsync(acks.Reader, responseStream, slots, logger, stop.Token);
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        // Reading alone also stops when the node stops; waiting to answer what was taken does not.
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(idle.Token, streams.Ending);
        try
        {
            while (await NextAsync(requestStream, caller, context.Method, idle, reading.Token, cancel))
            {
                // A free slot is taken at once; only a full stream waits (within the idle limit).
                if (!slots.Wait(0))
                {
                    await WithinIdleAsync(slots.WaitAsync, idle, cancel, "the client has not read its acknowledgements");
                }

                _ = AckAsync(requestStream.Current, caller, context.Method, acks.Writer, slotToFree: null);
            }

            // The till has finished sending (or the node is stopping): wait until every ack has been written.
            idle.CancelAfter(_idleMax);
            for (int i = 0; i < _inFlightMax; i++)
            {
                await WithinIdleAsync(slots.WaitAsync, idle, cancel, "the client has not read its acknowledgements");
            }

            ThrowIfStopping();
        }
        catch
        {
            acks.Writer.TryComplete();
            await StopWriterAsync(writer, stop);
            throw;
        }
        finally
        {
            acks.Writer.TryComplete();
            await writer;
        }
    }

    /// <summary>
    /// Decides one purchase and hands its answer to <paramref name="acks"/> (Ingest) or returns it
    /// (IngestBatches), freeing <paramref name="slotToFree"/> once decided. One method for both,
    /// so that each purchase costs one state machine. Never throws: a failure becomes a rejection
    /// that says to send it again.
    /// </summary>
    private async Task<StreamAck> AckAsync(V1.Purchase message, Caller caller, string method, ChannelWriter<StreamAck>? acks, SemaphoreSlim? slotToFree)
    {
        long started = Stopwatch.GetTimestamp();
        StreamAck answer;
        try
        {
            if (Refuse(message, caller, method) is { } refused)
            {
                answer = new StreamAck(null, refused);
            }
            else
            {
                Purchase? purchase = WireMapping.ToPurchase(message, clock.GetUtcNow(), out string? error);
                answer = purchase is null
                    ? new StreamAck(null, WireMapping.Rejected(message.TransactionId, StatusCode.InvalidArgument, error!))
                    : new StreamAck(await Member(purchase).Accrue(purchase), null);
            }
        }
        catch (Exception e)
        {
            GrainCalls.LogGrainCallFailed(logger, e, "Ingest");
            answer = new StreamAck(null, WireMapping.Rejected(message.TransactionId, StatusCode.Unavailable, "the purchase could not be processed: " + GrainCalls.UnknownOutcome));
        }

        GatewayMetrics.RecordPurchase(started, answer.Status);
        acks?.TryWrite(answer);
        slotToFree?.Release();
        return answer;
    }

    /// <summary>
    /// Reads the next message of a stream. A stream that sends nothing for
    /// <see cref="GatewayOptions.StreamIdleTimeoutSeconds"/> is ended with DEADLINE_EXCEEDED, so
    /// that abandoned streams do not hold a key's stream allowance and the engine's memory forever.
    /// False at the stream's end, and when the node is stopping (<paramref name="reading"/> also
    /// ends with the node's streams).
    /// </summary>
    /// <remarks>Awaited once, at once, by its loop: its state machine is reused from a pool rather than made per message.</remarks>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> NextAsync<T>(IAsyncStreamReader<T> stream, Caller caller, string method, CancellationTokenSource idle, CancellationToken reading, CancellationToken cancel)
    {
        idle.CancelAfter(_idleMax);
        bool more;
        try
        {
            more = await stream.MoveNext(reading);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested && streams.Ended)
        {
            // The node is stopping: take nothing more; what was taken is answered, then the stream ends.
            return false;
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded,
                $"no message for {_idleMax.TotalSeconds:0} s; the stream is closed (open a new one)"));
        }

        // A key revoked (or expired) while its stream is open stops there, not when the stream ends.
        if (more)
        {
            keys.ThrowIfNoLongerUsable(caller, faults, method);
        }

        return more;
    }

    /// <summary>
    /// When a stream ends in a refusal, its answers already decided are still written, so that the
    /// refusal's status follows them; a writer that has not finished within
    /// <see cref="WriterGraceMax"/> (its client does not read) is cancelled, which resets the stream.
    /// </summary>
    private static async Task StopWriterAsync(Task writer, CancellationTokenSource stop)
    {
        if (await Task.WhenAny(writer, Task.Delay(WriterGraceMax)) != writer)
        {
            await stop.CancelAsync();
        }
    }

    /// <summary>
    /// Waits for room in the stream's purchases in flight or its queue of answers. A client that
    /// stops reading its acknowledgements would hold that room forever (HTTP/2 flow control stops
    /// the writer); after the idle limit its stream is ended too.
    /// </summary>
    private async Task WithinIdleAsync(Func<CancellationToken, Task> wait, CancellationTokenSource idle, CancellationToken cancel, string what)
    {
        try
        {
            await wait(idle.Token);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, $"{what} for {_idleMax.TotalSeconds:0} s; the stream is closed"));
        }
    }

    /// <summary>
    /// Waits for every answer taken to be written, within the idle limit (restarted by each batch
    /// written): a client that has finished sending but stopped reading would otherwise hold the
    /// stream, its slot among the key's streams and its queued answers for as long as its
    /// connection lives.
    /// </summary>
    private Task AnsweredWithinIdleAsync(Task writer, CancellationTokenSource idle, CancellationToken cancel)
    {
        idle.CancelAfter(_idleMax);
        return WithinIdleAsync(writer.WaitAsync, idle, cancel, "the client has not read its answers");
    }

    /// <summary>
    /// The refusal of a streamed purchase the key may not send (another program, another store)
    /// or not send now (over its purchase quota), or null. The stream goes on either way.
    /// </summary>
    private V1.PurchaseAck? Refuse(V1.Purchase message, Caller caller, string method)
    {
        if ((caller.RefusesProgram(message.ProgramId) ?? caller.RefusesStore(message.StoreId)) is { } denied)
        {
            faults.Record(ClientFaultKind.PermissionDenied, method, denied);
            return WireMapping.Rejected(message.TransactionId, StatusCode.PermissionDenied, denied);
        }

        if (caller.Quota.TryTakePurchase(out TimeSpan retryAfter))
        {
            return null;
        }

        long milliseconds = TokenBucket.WholeMilliseconds(retryAfter);
        faults.Record(ClientFaultKind.QuotaExceeded, method, "the key's purchase rate");
        V1.PurchaseAck ack = WireMapping.Rejected(message.TransactionId, StatusCode.ResourceExhausted,
            "over the key's purchase rate; retry after " + milliseconds.ToString(CultureInfo.InvariantCulture) + " ms");
        ack.RetryAfterMs = milliseconds;
        return ack;
    }

    /// <inheritdoc />
    public override async Task IngestBatches(IAsyncStreamReader<V1.PurchaseBatch> requestStream, IServerStreamWriter<V1.PurchaseBatchAck> responseStream, ServerCallContext context)
    {
        // Also cancelled when the writer fails, so that reading stops instead of waiting for room in a queue nobody empties.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        CancellationToken cancel = stop.Token;
        Caller caller = Caller.Of(context);
        using OpenStreams.Lease open = OpenStream();
        // Not disposed: grain calls still running after the client has gone release their slots later.
        var slots = new SemaphoreSlim(_inFlightMax, _inFlightMax);
        // Answers decided and not yet written, counted in purchases: a queue of batches alone would
        // hold 64 batches of 1,000 answers (refusals cost no quota) for a client that does not read.
        var unwritten = new SemaphoreSlim(GatewayOptions.StreamAnswersPendingMax, GatewayOptions.StreamAnswersPendingMax);
        // Answers leave in batch order; a bounded queue of batches keeps a slow reader from piling them up.
        Channel<Task<StreamAck>[]> batches = Channel.CreateBounded<Task<StreamAck>[]>(
            new BoundedChannelOptions(GatewayOptions.StreamBatchesPendingMax) { SingleReader = true, SingleWriter = true });
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        // Once the client has finished sending, each batch written restarts the idle limit: the
        // stream ends only when its answers stop moving, not when the members are slow.
        bool draining = false;
        Task writer = WriteBatchAcksAsync(batches.Reader, responseStream, stop, unwritten, logger, () =>
        {
            if (Volatile.Read(ref draining))
            {
                idle.CancelAfter(_idleMax);
            }
        });
        // Reading alone also stops when the node stops; waiting to answer what was taken does not.
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(idle.Token, streams.Ending);
        try
        {
            for (long read = 1; await NextAsync(requestStream, caller, context.Method, idle, reading.Token, cancel); read++)
            {
                if (requestStream.Current.Purchases.Count > Limits.IngestBatchPurchasesMax)
                {
                    // Answering each purchase of a batch of any size would let one message of empty
                    // purchases (two bytes each) become millions of acknowledgements queued per stream.
                    batches.Writer.TryComplete();
                    Volatile.Write(ref draining, true);
                    await AnsweredWithinIdleAsync(writer, idle, cancel);
                    throw Oversized(read, context.Method);
                }

                Task<StreamAck>[] dispatched = await DispatchAsync(requestStream.Current, caller, context.Method, slots, unwritten, idle, cancel);
                if (!batches.Writer.TryWrite(dispatched))
                {
                    await WithinIdleAsync(t => batches.Writer.WriteAsync(dispatched, t).AsTask(), idle, cancel, "the client has not read its answers");
                }
            }

            // Every batch taken is answered before the stream ends.
            batches.Writer.TryComplete();
            Volatile.Write(ref draining, true);
            await AnsweredWithinIdleAsync(writer, idle, cancel);
            ThrowIfStopping();
        }
        catch
        {
            batches.Writer.TryComplete();
            await StopWriterAsync(writer, stop);
            throw;
        }
        finally
        {
            batches.Writer.TryComplete();
            await writer;
        }
    }

    /// <summary>Sends each purchase of a batch to its member in order, each once a slot is free; the slot comes back when its member has answered.</summary>
    private async Task<Task<StreamAck>[]> DispatchAsync(V1.PurchaseBatch batch, Caller caller, string method, SemaphoreSlim slots, SemaphoreSlim unwritten,
        CancellationTokenSource idle, CancellationToken cancel)
    {
        int count = batch.Purchases.Count;
        var calls = new Task<StreamAck>[count];
        for (int i = 0; i < count; i++)
        {
            // Room among the answers not yet written waits for the client to read them, within the idle limit.
            if (!unwritten.Wait(0))
            {
                await WithinIdleAsync(unwritten.WaitAsync, idle, cancel, "the client has not read its answers");
            }

            await slots.WaitAsync(cancel);
            calls[i] = AckAsync(batch.Purchases[i], caller, method, acks: null, slotToFree: slots);
        }

        return calls;
    }

    /// <summary>The end of a stream that sent a batch over the limit: the batches before it were answered; it and those after were not read.</summary>
    private RpcException Oversized(long batchNumber, string method)
    {
        // A batch over the limit is parsed only up to its first purchase too many (ParsingMethodProvider).
        string error = $"batch {batchNumber} of the stream has more than {Limits.IngestBatchPurchasesMax} purchases; a PurchaseBatch holds at most {Limits.IngestBatchPurchasesMax}. " +
            "Nothing of it was recorded; every batch before it was answered, and none after it was read: send them again in smaller batches";
        faults.Record(ClientFaultKind.TooLarge, method, error);
        return new RpcException(new Status(StatusCode.InvalidArgument, error));
    }

    /// <summary>
    /// Writes one answer per batch, in the order the batches came, each in the stream's one reused
    /// message (the write has serialized it when it completes); a failure stops the stream's reading too.
    /// </summary>
    private static async Task WriteBatchAcksAsync(ChannelReader<Task<StreamAck>[]> batches, IServerStreamWriter<V1.PurchaseBatchAck> responseStream, CancellationTokenSource stop,
        SemaphoreSlim unwritten, ILogger logger, Action written)
    {
        var reused = new ReusedBatchAck();
        try
        {
            await foreach (Task<StreamAck>[] calls in batches.ReadAllAsync(stop.Token))
            {
                V1.PurchaseBatchAck answer = reused.Begin();
                foreach (Task<StreamAck> call in calls)
                {
                    reused.Add(await call, logger);
                }

                await responseStream.WriteAsync(answer, stop.Token);
                if (calls.Length > 0)
                {
                    unwritten.Release(calls.Length);
                }

                written();
            }
        }
        catch (OperationCanceledException)
        {
            // The client went away; the remaining answers have nowhere to go.
        }
        catch (Exception)
        {
            await stop.CancelAsync();
            throw;
        }
    }

    /// <summary>
    /// Writes acks as they come, each member's answer in the stream's one reused message (the
    /// write has serialized it when it completes); a slot is freed only once its ack is on the wire.
    /// </summary>
    private static async Task WriteAcksAsync(ChannelReader<StreamAck> acks, IServerStreamWriter<V1.PurchaseAck> responseStream, SemaphoreSlim slots, ILogger logger, CancellationToken cancel)
    {
        var reused = new ReusedAck();
        try
        {
            // The wait for the next ack takes no token: the stream completes the channel however it
            // ends, which ends the wait, and a wait that can be cancelled makes a waiter per ack.
            while (await acks.WaitToReadAsync())
            {
                while (acks.TryRead(out StreamAck ack))
                {
                    await responseStream.WriteAsync(MessageOf(ack, reused, logger), cancel);
                    slots.Release();
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The client went away; the remaining acks have nowhere to go.
        }
    }

    /// <summary>Counts the stream as open; a stopping node refuses it instead.</summary>
    private OpenStreams.Lease OpenStream()
    {
        ThrowIfStopping();
        return streams.Open();
    }

    private void ThrowIfStopping()
    {
        if (streams.Ended)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, OpenStreams.StoppingMessage));
        }
    }

    private IMemberGrain Member(Purchase purchase) =>
        members.Get(purchase.ProgramId, purchase.MemberId);

    /// <summary>
    /// The message of an answer: in the stream's reused one (<paramref name="reused"/>), or a
    /// message of its own. A mapping that throws (a bug) answers that one purchase, so that the
    /// writer goes on with the others instead of ending the stream in silence.
    /// </summary>
    internal static V1.PurchaseAck MessageOf(StreamAck ack, ReusedAck? reused, ILogger logger)
    {
        if (ack.Refusal is { } refusal)
        {
            return refusal;
        }

        try
        {
            return reused is null ? WireMapping.ToAck(ack.Result!) : reused.Fill(ack.Result!);
        }
        catch (Exception e)
        {
            GrainCalls.LogGrainCallFailed(logger, e, "Ingest");
            return WireMapping.Rejected(ack.Result!.TransactionId, StatusCode.Unavailable,
                "the purchase's answer could not be made; it may have been recorded: send it again to read its result");
        }
    }

    /// <summary>
    /// A purchase's answer on its way to be written: the member's result, which the writer maps
    /// into the stream's one message, or an ack made already (a refusal before any member).
    /// </summary>
    internal readonly record struct StreamAck(AccrualResult? Result, V1.PurchaseAck? Refusal)
    {
        public V1.AckStatus Status => Refusal?.Status ?? WireMapping.StatusOf(Result!);
    }
}
