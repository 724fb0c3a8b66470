using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>
/// One stream's way to the engine: one purchase per message on Ingest, or, with a batch size
/// above one, purchases gathered into messages of that size on IngestBatches. Either way every
/// acknowledgement reaches the same handler, one purchase at a time.
/// </summary>
internal sealed class PurchaseSink : IDisposable
{
    private readonly int _batch;
    private readonly AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck>? _single;
    private readonly AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck>? _batched;
    private V1.PurchaseBatch _pending = new();

    public PurchaseSink(V1.Purchases.PurchasesClient client, int batch)
    {
        _batch = batch;
        if (batch > 1)
        {
            _batched = client.IngestBatches();
        }
        else
        {
            _single = client.Ingest();
        }
    }

    /// <summary>Sends the purchase, or keeps it until its batch is full.</summary>
    public async Task SendAsync(V1.Purchase purchase)
    {
        if (_single is not null)
        {
            await _single.RequestStream.WriteAsync(purchase);
            return;
        }

        _pending.Purchases.Add(purchase);
        if (_pending.Purchases.Count == _batch)
        {
            await SendPendingAsync();
        }
    }

    /// <summary>Sends a partly full batch now (a resend must not wait for the batch to fill).</summary>
    public async Task FlushAsync()
    {
        if (_batched is not null && _pending.Purchases.Count > 0)
        {
            await SendPendingAsync();
        }
    }

    /// <summary>Sends what is kept and closes the request stream.</summary>
    public async Task CompleteAsync()
    {
        if (_single is not null)
        {
            await _single.RequestStream.CompleteAsync();
            return;
        }

        await FlushAsync();
        await _batched!.RequestStream.CompleteAsync();
    }

    /// <summary>Hands every acknowledgement to <paramref name="acked"/> until the engine closes the stream.</summary>
    public async Task ReadAcksAsync(Action<V1.PurchaseAck> acked)
    {
        if (_single is not null)
        {
            await foreach (V1.PurchaseAck ack in _single.ResponseStream.ReadAllAsync())
            {
                acked(ack);
            }

            return;
        }

        await foreach (V1.PurchaseBatchAck answer in _batched!.ResponseStream.ReadAllAsync())
        {
            foreach (V1.PurchaseAck ack in answer.Acks)
            {
                acked(ack);
            }
        }
    }

    public void Dispose()
    {
        _single?.Dispose();
        _batched?.Dispose();
    }

    private async Task SendPendingAsync()
    {
        V1.PurchaseBatch full = _pending;
        _pending = new V1.PurchaseBatch();
        await _batched!.RequestStream.WriteAsync(full);
    }
}

/// <summary>
/// How the load tester makes its unary calls: over a key's quota it waits as long as the engine
/// asks, plus a random share of a few milliseconds so that its many parallel callers do not all
/// come back at the same instant; refused UNAVAILABLE (a node failing over) it waits a moment.
/// Then it tries again, for at most <see cref="PatienceMax"/> per call.
/// </summary>
internal static class Quota
{
    private static readonly TimeSpan PatienceMax = TimeSpan.FromMinutes(2);

    private static readonly TimeSpan UnavailableWait = TimeSpan.FromMilliseconds(200);

    /// <param name="call">The call.</param>
    /// <param name="cancellationToken">Ends the waiting.</param>
    /// <param name="retryUnavailable">False when the caller moves to another target on UNAVAILABLE itself.</param>
    public static async Task<T> RetryAsync<T>(Func<Task<T>> call, CancellationToken cancellationToken, bool retryUnavailable = true)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        while (true)
        {
            try
            {
                return await call();
            }
            catch (Grpc.Core.RpcException e) when ((e.StatusCode == Grpc.Core.StatusCode.ResourceExhausted || (retryUnavailable && e.StatusCode == Grpc.Core.StatusCode.Unavailable))
                && System.Diagnostics.Stopwatch.GetElapsedTime(started) < PatienceMax)
            {
                TimeSpan wait = e.StatusCode == Grpc.Core.StatusCode.Unavailable
                    ? UnavailableWait
                    : (Loyalty.Api.ApiKeyCalls.RetryAfter(e) ?? TimeSpan.FromMilliseconds(100)) + TimeSpan.FromMilliseconds(Random.Shared.Next(1, 20));
                await Task.Delay(wait, cancellationToken);
            }
        }
    }
}
