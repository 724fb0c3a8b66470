namespace Loyalty.OrleansFloor;

/// <summary>A member reduced to a counter.</summary>
public interface ICounterGrain : IGrainWithStringKey
{
    /// <summary>Adds <paramref name="amount"/>; <paramref name="id"/> names the call.</summary>
    /// <remarks>A value task, as the engine's member grain answers a purchase (Orleans then wraps no task around its answer).</remarks>
    ValueTask<long> AddAsync(string id, long amount);

    /// <summary>The id of the newest call kept (<see cref="PerCall.KeepId"/>), or null.</summary>
    Task<string?> LastIdAsync();
}

/// <summary>What each call does besides adding: the garbage it leaves, and whether the grain keeps the call's id.</summary>
public static class PerCall
{
    /// <summary>Bytes of short-lived garbage each call allocates.</summary>
    public static int Garbage { get; set; }

    /// <summary>The bytes the garbage takes on the heap per call: whole chunks of <see cref="CounterGrain.ChunkBytes"/>.</summary>
    public static int GarbageBytesPerCall => Garbage / CounterGrain.ChunkBytes * CounterGrain.ChunkBytes;

    /// <summary>Whether the grain keeps the newest call's id (a young reference stored into an old object).</summary>
    public static bool KeepId { get; set; }

    /// <summary>Whether the grain's method waits once before it answers (it yields to the activation's scheduler), as a member waits for its commit.</summary>
    public static bool AwaitOnce { get; set; }

    /// <summary>How many answers waited (<see cref="AwaitOnce"/>), warm-up included.</summary>
    public static long Waits => Interlocked.Read(ref _waits);

    private static long _waits;

    /// <summary>Counts one answer that waited.</summary>
    internal static void Waited() => Interlocked.Increment(ref _waits);

    /// <summary>The ledger each call commits one entry to before it answers (<see cref="FloorOptions.Ledger"/>), or none.</summary>
    public static FloorLedger? Ledger { get; set; }

    /// <summary>Where the garbage goes, so the JIT cannot drop it.</summary>
    public static object? Sink { get; set; }
}

/// <inheritdoc cref="ICounterGrain" />
/// <remarks>Reentrant, as the member grain is: a call that waits does not hold the next one back.</remarks>
[Orleans.Concurrency.Reentrant]
public sealed class CounterGrain : Grain, ICounterGrain
{
    /// <summary>The heap size of one piece of garbage.</summary>
    internal const int ChunkBytes = 256;
    private long _total;
    private string? _lastId;
    private long _sequence;

    /// <inheritdoc />
    public ValueTask<long> AddAsync(string id, long amount)
    {
        for (int i = 0; i < PerCall.Garbage / ChunkBytes; i++)
        {
            // A 232-byte array is 256 bytes on the heap.
            PerCall.Sink = new byte[ChunkBytes - 24];
        }

        if (PerCall.KeepId)
        {
            _lastId = id;
        }

        _total = checked(_total + amount);
        if (PerCall.Ledger is { } ledger)
        {
            // Numbered before the first wait, as a member numbers its entries: calls in flight at once take consecutive numbers.
            _sequence++;
            string memberId = this.GetPrimaryKeyString();
            return AnswerCommittedAsync(ledger.AppendAsync(memberId, _sequence), memberId, _sequence, _total);
        }

        return PerCall.AwaitOnce ? AnswerLaterAsync(_total) : ValueTask.FromResult(_total);
    }

    /// <summary>The answer once the call's entry is committed, from a pooled state machine (as the member's write loop).</summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<long> AnswerCommittedAsync(Task<bool> commit, string memberId, long sequence, long total)
    {
        if (!await commit)
        {
            throw FloorLedger.NotWritten(memberId, sequence);
        }

        PerCall.Waited();
        return total;
    }

    /// <summary>The answer after one wait, from a pooled state machine (as the member's write loop).</summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<long> AnswerLaterAsync(long total)
    {
        await Task.Yield();
        PerCall.Waited();
        return total;
    }

    /// <inheritdoc />
    public Task<string?> LastIdAsync() => Task.FromResult(_lastId);
}
