using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Loyalty.Storage;

/// <summary>
/// Group commit: ledger entries from every member grain of this silo wait in one bounded queue
/// and are written together, one database transaction per batch. A batch is flushed when it
/// holds <see cref="LedgerCommitOptions.BatchSizeMax"/> entries or its first entry has waited
/// <see cref="LedgerCommitOptions.FlushIntervalMs"/> (by default it does not wait: whatever is
/// queued goes). While one batch commits, the next fills, so batches grow with load. No path
/// commits once per entry.
/// </summary>
public sealed partial class LedgerCommitQueue
{
    /// <summary>The meter under which the queue publishes its counters.</summary>
    public const string MeterName = "Loyalty.Ledger";

    private static readonly Meter Meter = new(MeterName);
    private static readonly Counter<long> EntriesCommitted = Meter.CreateCounter<long>("loyalty.ledger.entries_committed");
    private static readonly Counter<long> BatchesCommitted = Meter.CreateCounter<long>("loyalty.ledger.batches_committed");
    private static readonly Counter<long> BatchesFailed = Meter.CreateCounter<long>("loyalty.ledger.batches_failed");
    private static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>("loyalty.ledger.commit_duration", "ms");

    /// <summary>How long the writer pauses after a failed batch before trying the next one.</summary>
    private static readonly TimeSpan FailureBackoff = TimeSpan.FromMilliseconds(50);

    private readonly ILedgerStore _store;
    private readonly LedgerCommitOptions _options;
    private readonly ILogger<LedgerCommitQueue> _logger;
    private readonly FaultInjector _faults;
    private readonly LedgerCommits _commits;
    private readonly Channel<PendingAppend> _queue;
    private Task? _writer;
    private long _batchCount;
    private long _entryCount;

    /// <summary>Creates the queue; call <see cref="Start"/> before appending.</summary>
    public LedgerCommitQueue(ILedgerStore store, IOptions<LedgerCommitOptions> options, ILogger<LedgerCommitQueue> logger, FaultInjector? faults = null, LedgerCommits? commits = null)
    {
        _store = store;
        _commits = commits ?? new LedgerCommits();
        _faults = faults ?? new FaultInjector();
        _options = options.Value;
        _options.Validate();
        _logger = logger;
        _queue = Channel.CreateBounded<PendingAppend>(new BoundedChannelOptions(_options.QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    /// <summary>Batches committed since start (for tests and diagnostics).</summary>
    public long BatchCount => Interlocked.Read(ref _batchCount);

    /// <summary>Entries committed since start (for tests and diagnostics).</summary>
    public long EntryCount => Interlocked.Read(ref _entryCount);

    /// <summary>
    /// Queues an entry and completes when its batch is committed: true when written, false when
    /// its sequence or transaction id was already taken (nothing written). Throws
    /// <see cref="LedgerUnavailableException"/> when the batch failed; then the entry is not
    /// durable and must not be acknowledged.
    /// </summary>
    public Task<bool> AppendAsync(LedgerEntry entry, DueChange? due = null)
    {
        string? details;
        try
        {
            _faults.At(FaultStep.Encode, entry);
            details = _store.StoresDetailsAsJson ? DetailsJson.Write(entry.Details) : null;
        }
        catch (Exception e)
        {
            // Fails like a batch would: the caller knows this exception and keeps nothing.
            return Task.FromException<bool>(new LedgerUnavailableException("The entry's details could not be encoded; the change was not recorded.", e));
        }

        return Enqueue(new PendingAppend(entry, due, null, details));
    }

    /// <summary>
    /// Queues two entries of one member that must commit together (a redemption and the purchase
    /// that carries it): they travel as one item, so they land in the same batch and the same
    /// transaction. True only when both were written.
    /// </summary>
    public Task<bool> AppendPairAsync(LedgerEntry first, LedgerEntry second, DueChange? due = null)
    {
        if (second.MemberId != first.MemberId || second.Sequence != first.Sequence + 1)
        {
            throw new InvalidOperationException($"A pair must be two consecutive entries of one member, not {first.MemberId}#{first.Sequence} and {second.MemberId}#{second.Sequence}.");
        }

        // A pair's details are encoded by the store, in its own transaction; the step is the same.
        return InjectedFault(FaultStep.Encode, "The entry's details could not be encoded", first, second)
            ?? Enqueue(new PendingAppend(first, due, second, null));
    }

    /// <summary>
    /// Queues a change to the due schedule on its own. It is written in queue order with the
    /// entries around it, so a member's exact due time is never overwritten by an older mark.
    /// </summary>
    public Task ScheduleAsync(DueChange due) => Enqueue(new PendingAppend(null, due, null, null));

    private Task<bool> Enqueue(PendingAppend pending)
    {
        if (pending.Entry is { } entry && InjectedFault(FaultStep.Enqueue, "The entry could not be queued", entry, pending.Second) is { } refused)
        {
            return refused;
        }

        if (!_queue.Writer.TryWrite(pending))
        {
            return WaitForRoomAsync(pending);
        }

        return pending.Task;
    }

    /// <summary>Starts the writer loop.</summary>
    public void Start()
    {
        if (_writer is not null)
        {
            throw new InvalidOperationException("The ledger commit queue is already running.");
        }

        // The writer has a thread of its own: its work is serial and, on SQLite, synchronous, so on
        // the thread pool it would hold a pool thread for a whole batch. Its waits block only this thread.
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                WriteLoop();
                stopped.SetResult();
            }
            catch (Exception e)
            {
                stopped.SetException(e);
            }
        })
        {
            IsBackground = true,
            Name = "Loyalty ledger writer",
        };
        thread.Start();
        _writer = stopped.Task;
    }

    /// <summary>Refuses new entries, commits everything queued, and stops the writer.</summary>
    public async Task StopAsync()
    {
        _queue.Writer.TryComplete();
        if (_writer is not null)
        {
            await _writer;
        }
    }

    private async Task<bool> WaitForRoomAsync(PendingAppend pending)
    {
        try
        {
            await _queue.Writer.WriteAsync(pending);
        }
        catch (ChannelClosedException e)
        {
            throw new LedgerUnavailableException("The ledger is shutting down.", e);
        }

        return await pending.Task;
    }

    private void WriteLoop()
    {
        ChannelReader<PendingAppend> reader = _queue.Reader;
        var batch = new List<PendingAppend>(_options.BatchSizeMax);
        var entries = new List<LedgerEntry>(_options.BatchSizeMax);
        List<string?>? details = _store.StoresDetailsAsJson ? new(_options.BatchSizeMax) : null;
        var dues = new List<DueChange>();
        var inserted = new bool[_options.BatchSizeMax];
        while (FillBatch(reader, batch))
        {
            if (batch.Count == 0)
            {
                continue;
            }

            entries.Clear();
            details?.Clear();
            dues.Clear();
            foreach (PendingAppend p in batch)
            {
                // A pair is written on its own, all or nothing, after the batch (pairs are rare).
                if (p.Entry is not null && p.Second is null)
                {
                    entries.Add(p.Entry);
                    details?.Add(p.EncodedDetails);
                }

                if (p.Due is { } due)
                {
                    dues.Add(due);
                }
            }

            CommitAsync(batch, entries, details, dues, inserted).GetAwaiter().GetResult();
            batch.Clear();
        }
    }

    /// <summary>Waits for a first entry, then gathers more until the batch is full or the flush interval is over.</summary>
    private bool FillBatch(ChannelReader<PendingAppend> reader, List<PendingAppend> batch)
    {
        if (!Wait(reader.WaitToReadAsync()))
        {
            return false;
        }

        long started = Stopwatch.GetTimestamp();
        while (batch.Count < _options.BatchSizeMax)
        {
            if (reader.TryRead(out PendingAppend? next))
            {
                batch.Add(next);
                continue;
            }

            TimeSpan remaining = TimeSpan.FromMilliseconds(_options.FlushIntervalMs) - Stopwatch.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero || !WaitForMore(reader, remaining))
            {
                break;
            }
        }

        return true;
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for another entry. A wait that times out is simply
    /// left behind (the next entry completes it), so an idle interval costs no exception and no
    /// cancellation source.
    /// </summary>
    private static bool WaitForMore(ChannelReader<PendingAppend> reader, TimeSpan timeout)
    {
        ValueTask<bool> more = reader.WaitToReadAsync();
        if (more.IsCompleted)
        {
            return more.Result;
        }

        Task<bool> pending = more.AsTask();
        return pending.Wait(timeout) && pending.Result;
    }

    /// <summary>Blocks the writer's thread until the channel answers.</summary>
    private static bool Wait(ValueTask<bool> pending) => pending.IsCompleted ? pending.Result : pending.AsTask().GetAwaiter().GetResult();

    private async Task CommitAsync(List<PendingAppend> batch, List<LedgerEntry> entries, List<string?>? details, List<DueChange> dues, bool[] inserted)
    {
        long started = Stopwatch.GetTimestamp();
        bool[]? pairs = null;
        try
        {
            if (_faults.Armed)
            {
                InjectCommitFaults(batch);
            }

            await _store.AppendBatchAsync(entries, inserted, dues, details, CancellationToken.None);
            for (int i = 0; i < batch.Count; i++)
            {
                if (batch[i] is { Entry: { } first, Second: { } second })
                {
                    // Only a batch that holds a pair pays for this array.
                    pairs ??= new bool[batch.Count];
                    pairs[i] = await _store.AppendPairAsync(first, second, CancellationToken.None);
                }
            }
        }
        catch (Exception e)
        {
            BatchesFailed.Add(1);
            LogBatchFailed(e, batch.Count);
            var failure = new LedgerUnavailableException("The ledger could not commit; the change was not recorded.", e);
            foreach (PendingAppend p in batch)
            {
                p.TrySetException(failure);
            }

            await Task.Delay(FailureBackoff);
            return;
        }

        CommitDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        BatchesCommitted.Add(1);
        EntriesCommitted.Add(entries.Count);
        Interlocked.Increment(ref _batchCount);
        Interlocked.Add(ref _entryCount, entries.Count);
        int entry = 0;
        for (int i = 0; i < batch.Count; i++)
        {
            PendingAppend p = batch[i];
            batch[i].TrySetResult(p.Second is not null ? pairs![i] : p.Entry is null || inserted[entry++]);
        }

        _commits.Signal();
    }

    /// <summary>
    /// When an armed fault chooses <paramref name="first"/> or <paramref name="second"/> at this
    /// step, the failure the caller would see from the ledger; otherwise null.
    /// </summary>
    private Task<bool>? InjectedFault(FaultStep step, string what, LedgerEntry first, LedgerEntry? second = null)
    {
        if (!_faults.Armed)
        {
            return null;
        }

        try
        {
            _faults.At(step, first);
            if (second is not null)
            {
                _faults.At(step, second);
            }

            return null;
        }
        catch (InjectedFaultException e)
        {
            return Task.FromException<bool>(new LedgerUnavailableException(what + "; the change was not recorded.", e));
        }
    }

    /// <summary>Fails the whole batch, as a database error would, when an armed fault chooses one of its entries.</summary>
    private void InjectCommitFaults(List<PendingAppend> batch)
    {
        foreach (PendingAppend p in batch)
        {
            if (p.Entry is { } first)
            {
                _faults.At(FaultStep.Commit, first);
            }

            if (p.Second is { } second)
            {
                _faults.At(FaultStep.Commit, second);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Ledger batch of {EntryCount} entries failed to commit")]
    private partial void LogBatchFailed(Exception exception, int entryCount);

    /// <summary>An entry waiting for its batch; the completion runs its awaiter off the writer loop.</summary>
    private sealed class PendingAppend(LedgerEntry? entry, DueChange? due, LedgerEntry? second, string? detailsJson) : TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        /// <summary>The entry's details encoded for the store, when it wants them so (a single entry only).</summary>
        public string? EncodedDetails { get; } = detailsJson;

        public LedgerEntry? Entry { get; } = entry;

        public LedgerEntry? Second { get; } = second;

        public DueChange? Due { get; } = due;
    }
}

/// <summary>The ledger could not make a change durable. Nothing of it was acknowledged; retry later.</summary>
public sealed class LedgerUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public LedgerUnavailableException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}
