using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Loyalty.Storage;
using Microsoft.Extensions.Options;

namespace Loyalty.Host.Events;

/// <summary>
/// A program's ledger entries in event order, replayed from a position and then followed live.
/// <para>
/// Why this and not Orleans Streams: the gap-free order is the ledger's (<see cref="ILedgerStore.ReadEventsAsync"/>),
/// and a subscriber that reconnects, or falls behind, must read it from there anyway. So each node
/// follows the ledger itself: one reader per program with subscribers on the node, woken at once
/// by the node's own commits and every <see cref="EventOptions.PollIntervalMs"/> for other nodes'.
/// A subscriber on any node sees every node's commits, with no second delivery path to reconcile
/// with the first, and the cost is one indexed query per program per wake, not per subscriber.
/// </para>
/// <para>
/// Handing over from replay to live without a gap: a subscriber joins the program's follower
/// first (from then on it is handed every entry after the follower's head), then replays from its
/// cursor until the ledger has no more. The replay's last read comes after the follower's head
/// was read, so it reaches at least that far; what both deliver is skipped by position.
/// </para>
/// </summary>
public sealed partial class EventFeed : IDisposable
{
    private readonly ILedgerStore _store;
    private readonly LedgerCommits _commits;
    private readonly EventOptions _options;
    private readonly ILogger<EventFeed> _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, ProgramFollower> _followers = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;
    private int _subscribers;

    /// <summary>Streams per program on this node (Events:SubscribersPerProgramMax).</summary>
    private readonly KeyedPlaces _programPlaces;

    /// <summary>Creates the feed; its loop starts with the first subscriber.</summary>
    public EventFeed(ILedgerStore store, LedgerCommits commits, IOptions<EventOptions> options, ILogger<EventFeed> logger)
    {
        _store = store;
        _commits = commits;
        _options = options.Value;
        _logger = logger;
        if (_options.Problem() is { } problem)
        {
            throw new OptionsValidationException(EventOptions.SectionName, typeof(EventOptions), [problem]);
        }

        _programPlaces = new KeyedPlaces(_options.SubscribersPerProgramMax);
    }

    /// <summary>Subscribers on this node now.</summary>
    public int Subscribers => Volatile.Read(ref _subscribers);

    /// <summary>
    /// Takes a subscriber's place for <paramref name="programId"/>: null when taken, else why not
    /// (the node serves as many streams as it may, or the program has as many of them on this
    /// node as one program may, so that one retailer cannot take every place).
    /// </summary>
    public string? TryEnter(string programId)
    {
        // The program's place first: a program at its limit never touches the node's count, which
        // another program's request reads at the same moment.
        if (!_programPlaces.TryTake(programId))
        {
            return $"program '{programId}' has as many event streams on this node as one program may ({_programPlaces.MaxPerKey}, Events:SubscribersPerProgramMax); close one, or try another node";
        }

        if (Interlocked.Increment(ref _subscribers) > _options.SubscribersMax)
        {
            Interlocked.Decrement(ref _subscribers);
            _programPlaces.GiveBack(programId);
            return "this node serves as many event streams as it may; try another node or later";
        }

        return null;
    }

    /// <summary>Gives back a place taken by <see cref="TryEnter"/>.</summary>
    public void Leave(string programId)
    {
        _programPlaces.GiveBack(programId);
        Interlocked.Decrement(ref _subscribers);
    }

    /// <summary>
    /// Every entry of the program after <paramref name="after"/>, in event order, without end:
    /// the ledger's history first, then entries as they commit; in batches of what is at hand
    /// (so that a writer can send a batch with one flush).
    /// </summary>
    public async IAsyncEnumerable<IReadOnlyList<PositionedEntry>> FollowAsync(string programId, EventPosition after, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        EnsureLoop();
        EventPosition last = after;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Subscription subscription = await JoinAsync(programId, cancellationToken);
            try
            {
                // The ledger's history up to (at least) the follower's head.
                while (true)
                {
                    IReadOnlyList<PositionedEntry> page = await _store.ReadEventsAsync(programId, last, _options.PageEntries, cancellationToken);
                    if (page.Count > 0)
                    {
                        last = page[^1].Position;
                        yield return page;
                    }

                    if (page.Count < _options.PageEntries)
                    {
                        break;
                    }
                }

                // Live, until the subscriber falls too far behind and the follower lets it go.
                ChannelReader<PositionedEntry> live = subscription.Entries;
                var batch = new List<PositionedEntry>();
                while (await live.WaitToReadAsync(cancellationToken))
                {
                    batch.Clear();
                    while (batch.Count < _options.PageEntries && live.TryRead(out PositionedEntry? entry))
                    {
                        if (entry.Position > last)
                        {
                            last = entry.Position;
                            batch.Add(entry);
                        }
                    }

                    if (batch.Count > 0)
                    {
                        yield return batch;
                    }
                }

                EventMetrics.FellBehind.Add(1);
                LogFellBehind(programId, _options.SubscriberBufferEntriesMax);
            }
            finally
            {
                Drop(programId, subscription);
            }
        }
    }

    /// <summary>Joins the program's follower, creating it (and reading its head) when it is the first.</summary>
    private async Task<Subscription> JoinAsync(string programId, CancellationToken cancellationToken)
    {
        ProgramFollower follower;
        lock (_gate)
        {
            if (!_followers.TryGetValue(programId, out follower!))
            {
                follower = new ProgramFollower(programId);
                _followers[programId] = follower;
            }

            // Counted before the head is read, so the follower is not removed in between.
            follower.Joining++;
        }

        bool attached = false;
        try
        {
            await follower.EnsureHeadAsync(_store, cancellationToken);
            Subscription subscription = follower.Attach(_options.SubscriberBufferEntriesMax);
            attached = true;
            return subscription;
        }
        finally
        {
            lock (_gate)
            {
                follower.Joining--;
                // A join that failed (the client left, the ledger failed) leaves no idle follower behind.
                if (!attached && follower.Count == 0 && follower.Joining == 0 && _followers.GetValueOrDefault(programId) == follower)
                {
                    _followers.Remove(programId);
                }
            }
        }
    }

    private void Drop(string programId, Subscription subscription)
    {
        lock (_gate)
        {
            if (_followers.TryGetValue(programId, out ProgramFollower? follower) && follower.Detach(subscription) == 0 && follower.Joining == 0)
            {
                _followers.Remove(programId);
            }
        }
    }

    private void EnsureLoop()
    {
        if (Volatile.Read(ref _loop) is not null)
        {
            return;
        }

        lock (_gate)
        {
            _loop ??= Task.Run(() => LoopAsync(_stop.Token));
        }
    }

    /// <summary>Reads every followed program's new entries at each local commit or poll, and hands them out.</summary>
    private async Task LoopAsync(CancellationToken stop)
    {
        TimeSpan poll = TimeSpan.FromMilliseconds(_options.PollIntervalMs);
        Task committed = _commits.Next;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.WhenAny(committed, Task.Delay(poll, stop));
                // Taken before the reads: a commit during them wakes the next wait at once.
                committed = _commits.Next;
                ProgramFollower[] followers;
                lock (_gate)
                {
                    followers = [.. _followers.Values];
                }

                foreach (ProgramFollower follower in followers)
                {
                    await follower.ReadNewAsync(_store, _options.PageEntries, stop);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // The ledger is unreachable: subscribers wait (they lose nothing); try again at the next poll.
                LogReadFailed(e);
                await Task.Delay(poll, CancellationToken.None);
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "An event subscriber of {ProgramId} fell more than {Entries} entries behind; it reads the ledger until it catches up")]
    private partial void LogFellBehind(string programId, int entries);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reading new ledger entries for event subscribers failed; retrying at the next poll")]
    private partial void LogReadFailed(Exception exception);

    /// <summary>One subscriber's bounded buffer of live entries.</summary>
    private sealed class Subscription(int capacity)
    {
        private readonly Channel<PositionedEntry> _channel = Channel.CreateBounded<PositionedEntry>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });

        public ChannelReader<PositionedEntry> Entries => _channel.Reader;

        /// <summary>Hands over an entry; false (and the buffer is closed) when the subscriber is too far behind.</summary>
        public bool Offer(PositionedEntry entry)
        {
            if (_channel.Writer.TryWrite(entry))
            {
                return true;
            }

            _channel.Writer.TryComplete();
            return false;
        }

        public void Close() => _channel.Writer.TryComplete();
    }

    /// <summary>
    /// One program's reader of new entries on this node: its head (the last position handed out)
    /// and its subscribers. Handing out a page and attaching a subscriber exclude each other, so a
    /// subscriber gets exactly the entries after the head it joined at.
    /// </summary>
    private sealed class ProgramFollower(string programId)
    {
        private readonly Lock _gate = new();
        private readonly List<Subscription> _subscriptions = [];
        private readonly SemaphoreSlim _reading = new(1, 1);
        private EventPosition _head;
        private bool _hasHead;

        /// <summary>Joins in progress (guarded by the feed's lock).</summary>
        public int Joining { get; set; }

        public async Task EnsureHeadAsync(ILedgerStore store, CancellationToken cancellationToken)
        {
            await _reading.WaitAsync(cancellationToken);
            try
            {
                if (!_hasHead)
                {
                    _head = await store.ReadEventsEndAsync(programId, cancellationToken);
                    _hasHead = true;
                }
            }
            finally
            {
                _reading.Release();
            }
        }

        public Subscription Attach(int capacity)
        {
            var subscription = new Subscription(capacity);
            lock (_gate)
            {
                _subscriptions.Add(subscription);
            }

            return subscription;
        }

        /// <summary>Subscribers now.</summary>
        public int Count
        {
            get
            {
                lock (_gate)
                {
                    return _subscriptions.Count;
                }
            }
        }

        /// <summary>Removes a subscriber; answers how many are left.</summary>
        public int Detach(Subscription subscription)
        {
            lock (_gate)
            {
                _subscriptions.Remove(subscription);
                subscription.Close();
                return _subscriptions.Count;
            }
        }

        /// <summary>Reads everything after the head and hands it out, page by page.</summary>
        public async Task ReadNewAsync(ILedgerStore store, int pageEntries, CancellationToken cancellationToken)
        {
            await _reading.WaitAsync(cancellationToken);
            try
            {
                if (!_hasHead)
                {
                    return;
                }

                while (true)
                {
                    IReadOnlyList<PositionedEntry> page = await store.ReadEventsAsync(programId, _head, pageEntries, cancellationToken);
                    HandOut(page);
                    if (page.Count < pageEntries)
                    {
                        return;
                    }
                }
            }
            finally
            {
                _reading.Release();
            }
        }

        private void HandOut(IReadOnlyList<PositionedEntry> page)
        {
            if (page.Count == 0)
            {
                return;
            }

            lock (_gate)
            {
                foreach (PositionedEntry entry in page)
                {
                    // Backwards, so that a subscriber let go can be removed in place.
                    for (int i = _subscriptions.Count - 1; i >= 0; i--)
                    {
                        if (!_subscriptions[i].Offer(entry))
                        {
                            _subscriptions.RemoveAt(i);
                        }
                    }
                }

                _head = page[^1].Position;
            }
        }
    }
}
