using System.Buffers;
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

    /// <summary>The storage's one meter (the SQLite lock waits publish under it too).</summary>
    internal static readonly Meter Meter = new(MeterName);
    private static readonly Counter<long> EntriesCommitted = Meter.CreateCounter<long>("loyalty.ledger.entries_committed");
    private static readonly Counter<long> BatchesCommitted = Meter.CreateCounter<long>("loyalty.ledger.batches_committed");
    private static readonly Counter<long> BatchesFailed = Meter.CreateCounter<long>("loyalty.ledger.batches_failed");
    private static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>("loyalty.ledger.commit_duration", "ms");

    /// <summary>How long a batch's first item waited in the queue before the writer began the batch.</summary>
    private static readonly Histogram<double> BatchWait = Meter.CreateHistogram<double>("loyalty.ledger.batch_wait", "ms");

    /// <summary>From an item queued (a change, or a member's group of changes) to its batch committed: the wait for the writer, then the commit.</summary>
    private static readonly Histogram<double> AppendDuration = Meter.CreateHistogram<double>("loyalty.ledger.append_duration", "ms");

    /// <summary>How long the writer pauses after a failed batch before trying the next one.</summary>
    private static readonly TimeSpan FailureBackoff = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// The arrays entries' details are encoded into while queued (see <see cref="EncodedDetails"/>).
    /// Up to 4,096 arrays of each size (powers of two up to <see cref="EncodedDetails.PooledBytesMax"/>)
    /// are kept: enough for every entry in flight at the load tester's maximum (about 2 MB of
    /// earns' JSON, in arrays of 512 bytes). Arrays are made only as entries need them, so a size
    /// holds 4,096 only after that many entries of its size were queued at once; an array not
    /// given back (an entry refused before the writer saw it) is simply collected.
    /// </summary>
    private static readonly ArrayPool<byte> DetailsBuffers = ArrayPool<byte>.Create(EncodedDetails.PooledBytesMax, 4096);

    private readonly ILedgerStore _store;
    private readonly LedgerCommitOptions _options;
    private readonly ILogger<LedgerCommitQueue> _logger;
    private readonly FaultInjector _faults;
    private readonly LedgerCommits _commits;
    private readonly Channel<PendingAppend> _queue;

    /// <summary>
    /// Set by every producer after it queues (and at the end), reset by the writer before it
    /// looks for work: the writer's wait. A thread blocking on the channel's own wait would make a
    /// waiter, a task over it and a blocking event for every batch, which at a steady rate is
    /// every few purchases; this event is made once. It is not disposed: it lives as long as the
    /// queue, producers may still set it after the writer stops, and an event whose wait handle is
    /// never read holds no handle of the system's, only a lock object.
    /// </summary>
    private readonly ManualResetEventSlim _queued = new(initialState: false);
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
    /// durable and must not be acknowledged. A due change no store may read
    /// (<see cref="DueChange.Check"/>) throws <see cref="ArgumentException"/> at once, and nothing is queued.
    /// </summary>
    public Task<bool> AppendAsync(LedgerEntry entry, DueChange? due = null, LockFence? fence = null)
    {
        RefuseBroken(due);
        EncodedDetails details;
        try
        {
            _faults.At(FaultStep.Encode, entry);
            details = _store.StoresDetailsAsJson ? DetailsJson.Encode(entry.Details, DetailsBuffers) : default;
        }
        catch (Exception e)
        {
            // Fails like a batch would: the caller knows this exception and keeps nothing.
            return Task.FromException<bool>(new LedgerUnavailableException("The entry's details could not be encoded; the change was not recorded.", e));
        }

        return Enqueue(new PendingAppend(entry, due, details) { Fence = fence });
    }

    /// <summary>
    /// Queues one member's consecutive entries that must commit together (changes decided on
    /// top of each other, or a redemption and the purchase that carries it): they travel as one
    /// item, so they land in the same batch, and the store writes them all or nothing. True only
    /// when all were written.
    /// </summary>
    public Task<bool> AppendGroupAsync(IReadOnlyList<LedgerEntry> group, DueChange? due = null, LockFence? fence = null)
    {
        if (EntryGroups.Check(group) is { } wrong)
        {
            throw new InvalidOperationException(wrong + ".");
        }

        if (group.Count == 1)
        {
            return AppendAsync(group[0], due, fence);
        }

        RefuseBroken(due);

        EncodedDetails[]? details = null;
        try
        {
            if (_store.StoresDetailsAsJson)
            {
                details = new EncodedDetails[group.Count];
            }

            for (int i = 0; i < group.Count; i++)
            {
                _faults.At(FaultStep.Encode, group[i]);
                if (details is not null)
                {
                    details[i] = DetailsJson.Encode(group[i].Details, DetailsBuffers);
                }
            }
        }
        catch (Exception e)
        {
            // What was encoded before the failure is not queued: its arrays go back now.
            foreach (EncodedDetails encoded in details ?? [])
            {
                encoded.Return();
            }

            return Task.FromException<bool>(new LedgerUnavailableException("The entries' details could not be encoded; the change was not recorded.", e));
        }

        return Enqueue(new PendingAppend(group, due, details) { Fence = fence });
    }

    /// <summary>
    /// Queues a change to the due schedule on its own. It is written in queue order with the
    /// entries around it, so a member's exact due time is never overwritten by an older mark. A
    /// change no store may read throws <see cref="ArgumentException"/> at once, as for <see cref="AppendAsync"/>.
    /// </summary>
    public Task ScheduleAsync(DueChange due)
    {
        RefuseBroken(due);
        return Enqueue(new PendingAppend((LedgerEntry?)null, due, default(EncodedDetails)));
    }

    /// <summary>Throws for a due change no store may read (see <see cref="DueChange.Check"/>): a caller's mistake, before anything is queued.</summary>
    private static void RefuseBroken(DueChange? due)
    {
        if (due?.Check() is { } problem)
        {
            throw new ArgumentException(problem + ".", nameof(due));
        }
    }

    private Task<bool> Enqueue(PendingAppend pending)
    {
        if (_faults.Armed && InjectedFault(FaultStep.Enqueue, "The entry could not be queued", pending) is { } refused)
        {
            pending.ReturnDetails();
            return refused;
        }

        if (!_queue.Writer.TryWrite(pending))
        {
            return WaitForRoomAsync(pending);
        }

        _queued.Set();
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
        _writer = DedicatedThread.Start("Loyalty ledger writer", WriteLoop);
    }

    /// <summary>Refuses new entries, commits everything queued, and stops the writer.</summary>
    public async Task StopAsync()
    {
        _queue.Writer.TryComplete();
        _queued.Set();
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
            _queued.Set();
        }
        catch (ChannelClosedException e)
        {
            // Never queued: the writer will not give its arrays back.
            pending.ReturnDetails();
            throw new LedgerUnavailableException("The ledger is shutting down.", e);
        }

        return await pending.Task;
    }

    private void WriteLoop()
    {
        ChannelReader<PendingAppend> reader = _queue.Reader;
        var batch = new List<PendingAppend>(_options.BatchSizeMax);
        var entries = new List<LedgerEntry>(_options.BatchSizeMax);
        List<ReadOnlyMemory<byte>>? details = _store.StoresDetailsAsJson ? new(_options.BatchSizeMax) : null;
        var dues = new List<DueChange>();
        var groups = new List<EntryGroup>();
        var fences = new List<EntryFence>();
        bool[] inserted = new bool[_options.BatchSizeMax];
        while (FillBatch(reader, batch))
        {
            if (batch.Count == 0)
            {
                continue;
            }

            entries.Clear();
            details?.Clear();
            dues.Clear();
            groups.Clear();
            fences.Clear();
            foreach (PendingAppend p in batch)
            {
                if (p.Count > 1)
                {
                    groups.Add(new EntryGroup(entries.Count, p.Count));
                }

                LockFence? fence = p.Fence;
                for (int i = 0; i < p.Count; i++)
                {
                    if (fence is not null)
                    {
                        fences.Add(new EntryFence(entries.Count, fence.LockName, fence.Epoch));
                    }

                    entries.Add(p[i]);
                    details?.Add(p.EncodedDetails(i).Json);
                }

                if (p.Due is { } due)
                {
                    dues.Add(due);
                }
            }

            if (inserted.Length < entries.Count)
            {
                // A batch of groups may hold more entries than items.
                inserted = new bool[entries.Count];
            }

            try
            {
                CommitAsync(batch, entries, details, dues, groups, fences, inserted).GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                // CommitAsync answers every item itself; this is the last resort for a fault of
                // its own, so that the writer goes on: ended, it would leave every later append,
                // and every member waiting on one, waiting for good. An item not yet answered is
                // failed, and its member reloads from the ledger, which says whether it is there.
                LogBatchFailed(e, entries.Count);
                foreach (PendingAppend p in batch)
                {
                    p.TrySetException(new LedgerUnavailableException("The ledger's writer failed on this batch; the change may not be recorded.", e));
                }
            }

            // Written or failed, the batch is over and nothing reads its bytes any more (a failed
            // item is not retried from the queue; its caller appends again).
            details?.Clear();
            foreach (PendingAppend p in batch)
            {
                p.ReturnDetails();
            }

            batch.Clear();
        }
    }

    /// <summary>Waits for a first entry, then gathers more until the batch is full or the flush interval is over.</summary>
    private bool FillBatch(ChannelReader<PendingAppend> reader, List<PendingAppend> batch)
    {
        if (!WaitForEntry(reader, Timeout.InfiniteTimeSpan))
        {
            return false;
        }

        long started = Stopwatch.GetTimestamp();
        // Counted in entries, not queued items: one item may be a member's group of entries (a
        // merge's, a wake's), and the limit is the transaction's size. An item with none (a due
        // change alone) counts as one row. The last group taken may go past the limit.
        int rows = 0;
        while (rows < _options.BatchSizeMax)
        {
            if (reader.TryRead(out PendingAppend? next))
            {
                batch.Add(next);
                rows += Math.Max(1, next.Count);
                continue;
            }

            TimeSpan remaining = TimeSpan.FromMilliseconds(_options.FlushIntervalMs) - Stopwatch.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero || !WaitForEntry(reader, remaining))
            {
                break;
            }
        }

        return true;
    }

    /// <summary>
    /// Blocks the writer's thread up to <paramref name="timeout"/> (or without end) until an item
    /// can be read: false when the time is over, or when the queue is closed and empty. The event
    /// is reset before the queue is looked at, so an item queued after the look sets it again and
    /// the wait returns at once; a wake that finds nothing looks again.
    /// </summary>
    private bool WaitForEntry(ChannelReader<PendingAppend> reader, TimeSpan timeout)
    {
        long started = Stopwatch.GetTimestamp();
        while (true)
        {
            _queued.Reset();
            if (reader.TryPeek(out _))
            {
                return true;
            }

            if (reader.Completion.IsCompleted)
            {
                return false;
            }

            TimeSpan left = timeout == Timeout.InfiniteTimeSpan ? timeout : timeout - Stopwatch.GetElapsedTime(started);
            if ((left != Timeout.InfiniteTimeSpan && left <= TimeSpan.Zero) || !_queued.Wait(left))
            {
                return reader.TryPeek(out _);
            }
        }
    }

    private async Task CommitAsync(List<PendingAppend> batch, List<LedgerEntry> entries, List<ReadOnlyMemory<byte>>? details, List<DueChange> dues,
        List<EntryGroup> groups, List<EntryFence> fences, bool[] inserted)
    {
        long started = Stopwatch.GetTimestamp();
        BatchWait.Record(Stopwatch.GetElapsedTime(batch[0].QueuedAt, started).TotalMilliseconds);
        try
        {
            if (_faults.Armed)
            {
                InjectCommitFaults(entries, dues);
                if (_faults.Chooses(FaultStep.LateCommit, entries))
                {
                    await CommitLateAsync(batch, entries, details, dues, groups, fences, inserted);
                    return;
                }
            }

            await _store.AppendBatchAsync(entries, inserted, dues, details, groups, fences, CancellationToken.None);
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

        long committed = Stopwatch.GetTimestamp();
        CommitDuration.Record(Stopwatch.GetElapsedTime(started, committed).TotalMilliseconds);
        BatchesCommitted.Add(1);
        EntriesCommitted.Add(entries.Count);
        Interlocked.Increment(ref _batchCount);
        Interlocked.Add(ref _entryCount, entries.Count);
        int entry = 0;
        foreach (PendingAppend p in batch)
        {
            // An item is written when all its entries are (a group's are all or none).
            bool written = true;
            for (int i = 0; i < p.Count; i++)
            {
                written &= inserted[entry++];
            }

            if (p.Count > 0)
            {
                AppendDuration.Record(Stopwatch.GetElapsedTime(p.QueuedAt, committed).TotalMilliseconds);
            }

            p.TrySetResult(written);
        }

        _commits.Signal();
    }

    /// <summary>
    /// When an armed fault chooses one of the item's entries at this step, the failure the
    /// caller would see from the ledger; otherwise null.
    /// </summary>
    private Task<bool>? InjectedFault(FaultStep step, string what, PendingAppend pending)
    {
        try
        {
            for (int i = 0; i < pending.Count; i++)
            {
                _faults.At(step, pending[i]);
            }

            return null;
        }
        catch (InjectedFaultException e)
        {
            return Task.FromException<bool>(new LedgerUnavailableException(what + "; the change was not recorded.", e));
        }
    }

    /// <summary>
    /// An armed <see cref="FaultStep.LateCommit"/>: the batch's items are answered as failed, as a
    /// COMMIT whose connection was lost, and the batch is written after the fault's delay, as the
    /// server that went on would. Only in tests; the writer waits meanwhile.
    /// </summary>
    private async Task CommitLateAsync(List<PendingAppend> batch, List<LedgerEntry> entries, List<ReadOnlyMemory<byte>>? details, List<DueChange> dues,
        List<EntryGroup> groups, List<EntryFence> fences, bool[] inserted)
    {
        var lost = new LedgerUnavailableException("The ledger's answer to the commit was lost (an injected fault); the change may be recorded.",
            new InjectedFaultException(FaultStep.LateCommit, $"a batch of {entries.Count} entries"));
        foreach (PendingAppend p in batch)
        {
            p.TrySetException(lost);
        }

        await Task.Delay(_faults.LateCommitDelay);
        await _store.AppendBatchAsync(entries, inserted, dues, details, groups, fences, CancellationToken.None);
    }

    /// <summary>Fails the whole batch, as a database error would, when an armed fault chooses one of its entries or due changes.</summary>
    private void InjectCommitFaults(List<LedgerEntry> entries, List<DueChange> dues)
    {
        foreach (LedgerEntry entry in entries)
        {
            _faults.At(FaultStep.Commit, entry);
        }

        foreach (DueChange due in dues)
        {
            _faults.AtDue(due);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Ledger batch of {EntryCount} entries failed to commit")]
    private partial void LogBatchFailed(Exception exception, int entryCount);

    /// <summary>
    /// An entry (or a group of one member's entries, or only a due change) waiting for its batch;
    /// the completion runs its awaiter off the writer loop.
    /// </summary>
    private sealed class PendingAppend : TaskCompletionSource<bool>
    {
        private readonly LedgerEntry? _entry;
        private readonly IReadOnlyList<LedgerEntry>? _group;
        private readonly EncodedDetails _entryDetails;
        private readonly EncodedDetails[]? _groupDetails;

        /// <summary>One entry (or none, for a due change alone) and its encoded details.</summary>
        public PendingAppend(LedgerEntry? entry, DueChange? due, EncodedDetails details)
            : base(TaskCreationOptions.RunContinuationsAsynchronously) => (_entry, Due, _entryDetails) = (entry, due, details);

        /// <summary>A member's group of entries and their encoded details.</summary>
        public PendingAppend(IReadOnlyList<LedgerEntry> group, DueChange? due, EncodedDetails[]? details)
            : base(TaskCreationOptions.RunContinuationsAsynchronously) => (_group, Due, _groupDetails) = (group, due, details);

        /// <summary>Entry <paramref name="index"/>'s details encoded for the store, when it wants them so (else none).</summary>
        public EncodedDetails EncodedDetails(int index) => _group is null ? _entryDetails : _groupDetails?[index] ?? default;

        /// <summary>Gives the encoded details' pooled arrays back; once, after the item's batch.</summary>
        public void ReturnDetails()
        {
            _entryDetails.Return();
            foreach (EncodedDetails encoded in _groupDetails ?? [])
            {
                encoded.Return();
            }
        }

        /// <summary>How many entries the item holds: none for a due change alone.</summary>
        public int Count => _group?.Count ?? (_entry is null ? 0 : 1);

        /// <summary>The item's entries, in sequence order.</summary>
        public LedgerEntry this[int index] => _group is null ? _entry! : _group[index];

        public DueChange? Due { get; }

        /// <summary>The lock and epoch the item's change was decided under, when a desk's step (see <see cref="EntryFence"/>).</summary>
        public LockFence? Fence { get; init; }

        /// <summary>When the item was made, just before it was queued (<see cref="Stopwatch"/> ticks).</summary>
        public long QueuedAt { get; } = Stopwatch.GetTimestamp();
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
