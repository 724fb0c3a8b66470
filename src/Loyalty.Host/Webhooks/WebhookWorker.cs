using System.Collections.Concurrent;
using System.Diagnostics;
using Loyalty.Host.Events;
using Loyalty.Storage;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Webhooks;

/// <summary>
/// Delivers one subscription's events while this node holds its lease. Events are taken in
/// windows after the saved position; within a window each member's events go one after the
/// other (a member's next event only after its previous one was delivered), different members' in
/// parallel; the position moves past a window only once all of it was delivered. So a node that
/// dies mid-window leaves the window to the next holder, which delivers it again (at least once,
/// with the same delivery ids), and nothing after it was delivered before it.
/// </summary>
internal sealed partial class WebhookWorker(
    WebhookRow webhook,
    string owner,
    ILedgerStore ledger,
    IWebhookStore store,
    WebhookSender sender,
    LedgerCommits commits,
    WebhookOptions options,
    TimeProvider clock,
    ILogger logger,
    CancellationToken abandon)
{
    /// <summary>The smallest gap between two reads of the ledger, however often commits wake the worker.</summary>
    private static readonly TimeSpan ReadGapMin = TimeSpan.FromMilliseconds(50);

    /// <summary>How often, at most, the member tasks of a window read the subscription again.</summary>
    private static readonly TimeSpan RefreshEvery = TimeSpan.FromSeconds(1);

    /// <summary>How old a window may be before an event's first attempt reads the event and the subscription again.</summary>
    private static readonly TimeSpan RereadAfter = TimeSpan.FromSeconds(5);

    /// <summary>How often a worker whose right to send ran out looks whether a renewal restored it.</summary>
    private static readonly TimeSpan LeaseWaitPoll = TimeSpan.FromMilliseconds(20);

    private readonly Lock _gate = new();
    private readonly ConcurrentQueue<WebhookAttemptRow> _attempts = new();
    private readonly SemaphoreSlim _saving = new(1, 1);
    private WebhookRow _webhook = webhook;

    /// <summary>
    /// When this node must stop sending (Stopwatch ticks): two thirds of a lease after it last
    /// took or renewed it, so that it stops before another node may take over, even if its
    /// renewals fail or the clocks of the nodes disagree by less than a third of a lease.
    /// </summary>
    private long _sendUntil = Stopwatch.GetTimestamp() + LeaseTicks(options, 2.0 / 3);
    private EventMark _delivered = ParsePosition(webhook.Position);
    private DateTimeOffset? _failingSince = webhook.FailingSince;

    /// <summary>When this worker took the subscription (Stopwatch ticks).</summary>
    private readonly long _heldSince = Stopwatch.GetTimestamp();

    /// <summary>When the worker last found nothing to deliver (Stopwatch ticks), or 0 while it has work.</summary>
    private long _idleSince;

    private volatile bool _yielding;

    /// <summary>Cancelled by <see cref="Yield"/>: a failing window's backoff ends at once, and the worker with it.</summary>
    private readonly CancellationTokenSource _yieldRequested = new();

    /// <summary>When the window being delivered was read (Stopwatch ticks).</summary>
    private long _windowReadAt;

    /// <summary>Set when a window gave up (the subscription disabled or deleted, or the worker ending): the worker only ends now.</summary>
    private volatile bool _gaveUp;

    /// <summary>When the subscription was last read by <see cref="RefreshAsync"/> (Stopwatch ticks; 0 for never).</summary>
    private long _refreshedAt;

    /// <summary>When <see cref="Yield"/> was called (Stopwatch ticks).</summary>
    private long _askedAt;

    /// <summary>The subscription's (program, id).</summary>
    public (string ProgramId, string WebhookId) Key { get; } = (webhook.ProgramId, webhook.WebhookId);

    /// <summary>Whether the worker was asked to give its place up (see <see cref="Yield"/>).</summary>
    public bool Yielding => _yielding;

    /// <summary>How long the worker has had nothing to deliver (zero while it has).</summary>
    public TimeSpan IdleFor => Interlocked.Read(ref _idleSince) is var since and > 0 ? Stopwatch.GetElapsedTime(since) : TimeSpan.Zero;

    /// <summary>How long the worker has held its subscription.</summary>
    public TimeSpan HeldFor => Stopwatch.GetElapsedTime(_heldSince);

    /// <summary>
    /// Asks the worker to end at its next step, so that a full node can give its place to a
    /// subscription that waits: between windows (a window under way is delivered and saved
    /// first), or, when a window is failing, at its next wait for a retry (the window is then
    /// delivered again, from its start, by the next holder: at least once, as always).
    /// </summary>
    public void Yield()
    {
        Interlocked.Exchange(ref _askedAt, Stopwatch.GetTimestamp());
        _yielding = true;
        _yieldRequested.Cancel();
    }

    /// <summary>How long ago the worker was asked to give its place up (zero when it was not).</summary>
    public TimeSpan AskedFor => _yielding ? Stopwatch.GetElapsedTime(Interlocked.Read(ref _askedAt)) : TimeSpan.Zero;

    /// <summary>
    /// Runs until <paramref name="stop"/>, the lease is lost, or the subscription is disabled or
    /// deleted. Attempts under way when it stops run on to their answers or their time limit,
    /// unless the node's abandon token (given when made) ends them first (see <see cref="WebhookSender.SendAsync"/>).
    /// </summary>
    public async Task RunAsync(CancellationToken stop)
    {
        using var running = CancellationTokenSource.CreateLinkedTokenSource(stop);
        Task renewing = RenewAsync(running);
        try
        {
            while (!running.IsCancellationRequested && !_yielding)
            {
                // Taken before the read: a commit during the read wakes the next wait at once.
                Task committed = commits.Next;
                string typesRead = _webhook.Types;
                Interlocked.Exchange(ref _windowReadAt, Stopwatch.GetTimestamp());
                (List<V1.Event> window, EventMark end) = await ReadWindowAsync(running.Token);
                if (end.CompareTo(Delivered) > 0)
                {
                    // A change to the subscription (deleted, disabled, another URL or event types)
                    // counts from the next window, not from the next renewal a third of a lease on.
                    if (!await RefreshAsync(running.Token))
                    {
                        return;
                    }

                    if (_webhook.Types != typesRead)
                    {
                        continue;
                    }
                }
                else
                {
                    Interlocked.CompareExchange(ref _idleSince, Stopwatch.GetTimestamp(), 0);

                    // Idle: a good moment to write the delivery log.
                    await FlushAttemptsAsync();
                    await Task.WhenAny(committed, Task.Delay(options.PollIntervalMs, running.Token));
                    await Task.Delay(ReadGapMin, running.Token);
                    continue;
                }

                Interlocked.Exchange(ref _idleSince, 0);
                if (!await DeliverWindowAsync(window, running.Token))
                {
                    return;
                }

                lock (_gate)
                {
                    _delivered = end;
                }

                // Saved even when the node is stopping (that is what it waits for), unless it has
                // stopped waiting: a window delivered in full is not sent again by the next holder.
                if (!await SaveAsync(abandon))
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (running.IsCancellationRequested)
        {
            // Stopping, or the lease is gone: the saved position is where the next holder starts.
        }
        finally
        {
            await running.CancelAsync();
            await renewing.ContinueWith(static _ => { }, TaskScheduler.Default);
            await FlushAttemptsAsync();
        }
    }

    private EventMark Delivered
    {
        get
        {
            lock (_gate)
            {
                return _delivered;
            }
        }
    }

    /// <summary>The events after the position, up to a window's worth, and the mark of the last one looked at.</summary>
    private async Task<(List<V1.Event> Window, EventMark End)> ReadWindowAsync(CancellationToken cancellationToken)
    {
        EventMark delivered = Delivered;
        HashSet<string>? types = TypesOf(_webhook.Types);
        IReadOnlyList<PositionedEntry> page = await ledger.ReadEventsAsync(
            _webhook.ProgramId, EventCursor.ReadFrom(delivered.Position, delivered.Index), options.WindowEvents, cancellationToken);
        var window = new List<V1.Event>(page.Count);
        EventMark end = delivered;
        foreach (PositionedEntry entry in page)
        {
            int count = LoyaltyEvents.CountOf(entry.Entry);
            for (int index = 0; index < count; index++)
            {
                var mark = new EventMark(entry.Position, index);
                if (mark.CompareTo(delivered) <= 0)
                {
                    continue;
                }

                end = mark;
                if (types is null || types.Contains(LoyaltyEvents.TypeOf(entry.Entry, index)))
                {
                    window.Add(LoyaltyEvents.ToEvent(entry, index));
                }
            }
        }

        return (window, end);
    }

    /// <summary>Delivers a window: members in parallel, each member's events in order. False when the subscription was disabled.</summary>
    private async Task<bool> DeliverWindowAsync(List<V1.Event> window, CancellationToken cancellationToken)
    {
        using var disabled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var slots = new SemaphoreSlim(options.ConcurrencyPerWebhook);
        Exception? failure = null;

        async Task MemberAsync(IEnumerable<V1.Event> events)
        {
            await slots.WaitAsync(disabled.Token);
            try
            {
                foreach (V1.Event e in events)
                {
                    if (!await DeliverAsync(e, disabled.Token))
                    {
                        _gaveUp = true;
                        await disabled.CancelAsync();
                        return;
                    }
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The others stop too: the window is delivered again from its start anyway.
                failure = e;
                await disabled.CancelAsync();
            }
            finally
            {
                slots.Release();
            }
        }

        Task all = Task.WhenAll(window.GroupBy(e => e.MemberId, StringComparer.Ordinal).Select(member => MemberAsync(member)));
        try
        {
            await all;
        }
        catch (OperationCanceledException) when (_gaveUp || failure is not null)
        {
        }

        if (failure is not null)
        {
            throw new InvalidOperationException("A delivery failed unexpectedly; the window will be delivered again.", failure);
        }

        return !_gaveUp;
    }

    /// <summary>Delivers one event, retrying with exponential backoff; false when the subscription was disabled meanwhile.</summary>
    private async Task<bool> DeliverAsync(V1.Event e, CancellationToken cancellationToken)
    {
        for (int attempt = 1; ; attempt++)
        {
            // A stopping node (or a disabled subscription) starts no new attempt; the wait for the
            // lease below only looks at the token when it has to wait.
            cancellationToken.ThrowIfCancellationRequested();
            await WaitForLeaseAsync(cancellationToken);
            WebhookRow current = _webhook;
            if (attempt > 1 || Stopwatch.GetElapsedTime(Interlocked.Read(ref _windowReadAt)) > RereadAfter)
            {
                // A retry, or an event that waited behind its member's failing one, goes where the
                // subscription now says (its URL or secret may have changed meanwhile), not at all
                // once it was disabled or deleted or its type dropped, and as the ledger holds it
                // now (an erasure meanwhile removed its personal text).
                if (!await RefreshAsync(cancellationToken))
                {
                    return false;
                }

                current = _webhook;
                if (TypesOf(current.Types) is { } types && !types.Contains(e.Type))
                {
                    // No longer subscribed to: dropped as the window's read would drop it, and
                    // its failures no longer count towards disabling the subscription.
                    lock (_gate)
                    {
                        _failingSince = null;
                    }

                    return true;
                }

                if (await RereadAsync(e, cancellationToken) is not { } fresh)
                {
                    await Task.Delay(Backoff(attempt), cancellationToken);
                    continue;
                }

                e = fresh;
            }

            // An attempt once started is not cancelled (another member's attempt disabling the
            // endpoint, the lease running out, the node stopping): it may already have reached the
            // receiver, and the log must hold every attempt that may have. Its own time limit
            // (Webhooks:TimeoutSeconds) bounds it; the backoff and the lease wait below stop at once.
            // Only a node that has waited as long as it may to stop abandons it, and logs that.
            DeliveryOutcome outcome = await sender.SendAsync(current, e, abandon);
            DateTimeOffset now = clock.GetUtcNow();
            if (_attempts.Count >= IWebhookStore.AttemptsKeptPerWebhook)
            {
                // The log keeps the newest attempts only; so does the queue before it is written.
                _attempts.TryDequeue(out _);
            }

            _attempts.Enqueue(new WebhookAttemptRow(0, current.ProgramId, current.WebhookId, WebhookSender.DeliveryIdOf(current.WebhookId, e.EventId),
                e.EventId, e.Type, e.MemberId, attempt, now, outcome.StatusCode, outcome.LatencyMs, outcome.Error, Manual: false));
            EventMetrics.WebhookAttempts.Add(1, new KeyValuePair<string, object?>("outcome", outcome.Delivered ? "delivered" : "failed"));

            // Abandoned by a stopping node: logged, and not the receiver's failure (it counts
            // towards nothing); the next holder delivers the event again.
            abandon.ThrowIfCancellationRequested();
            if (outcome.Delivered)
            {
                EventMetrics.WebhookDelay.Record((now - e.Time.ToDateTimeOffset()).TotalMilliseconds);
                lock (_gate)
                {
                    _failingSince = null;
                }

                return true;
            }

            TimeSpan failing;
            lock (_gate)
            {
                _failingSince ??= now;
                failing = now - _failingSince.Value;
            }

            LogAttemptFailed(current.ProgramId, current.WebhookId, e.EventId, attempt, outcome.Error ?? "");
            if (cancellationToken.IsCancellationRequested)
            {
                // The window gave up while this attempt ran (another member's failure disabled the
                // subscription, or the worker is ending): this late failure disables nothing. An
                // operator may have enabled it again meanwhile, under the same lease owner.
                return false;
            }

            if (failing >= TimeSpan.FromSeconds(options.DisableAfterFailingSeconds))
            {
                string reason = WebhookSender.Bounded($"failing since {now - failing:u}: {outcome.Error}");
                if (await store.DisableAsync(current.ProgramId, current.WebhookId, owner, current.UpdatedAt, reason, now, CancellationToken.None))
                {
                    EventMetrics.WebhooksDisabled.Add(1);
                    LogDisabled(current.ProgramId, current.WebhookId, reason);
                    return false;
                }

                // Not disabled: its settings changed since this attempt read them (a new URL or
                // secret, a re-enable), or the lease is gone. The retry below reads them again (or
                // finds it disabled, or its lease lost, and stops).
            }

            // Asked to give its place up, a subscription failing for two leases or more does so
            // here rather than retry for days in this window; one that fails now and then (a 503
            // mid-window) retries, and gives its place up after its window, so that what it
            // delivered is saved and not sent again.
            bool failingLong = failing >= options.TurnAfter;
            using var backoff = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, failingLong ? _yieldRequested.Token : CancellationToken.None);
            try
            {
                await Task.Delay(Backoff(attempt), backoff.Token);
            }
            catch (OperationCanceledException) when (_yielding && !cancellationToken.IsCancellationRequested)
            {
                // Another subscription waits for this node's place: this failing one takes its turn later.
                return false;
            }
        }
    }

    /// <summary>
    /// The subscription as stored now, read at most every <see cref="RefreshEvery"/> (the member
    /// tasks of a window share the read); false when it was deleted or disabled (the worker then
    /// ends). A failed read keeps the subscription as last read: the next renewal reads it again.
    /// </summary>
    private async Task<bool> RefreshAsync(CancellationToken cancellationToken)
    {
        long last = Interlocked.Read(ref _refreshedAt);
        if (last != 0 && Stopwatch.GetElapsedTime(last) < RefreshEvery)
        {
            return true;
        }

        WebhookRow? fresh;
        try
        {
            fresh = await store.GetAsync(_webhook.ProgramId, _webhook.WebhookId, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogRenewFailed(e, _webhook.ProgramId, _webhook.WebhookId);
            return true;
        }

        if (fresh is not { Enabled: true })
        {
            return false;
        }

        _webhook = fresh;
        Interlocked.Exchange(ref _refreshedAt, Stopwatch.GetTimestamp());
        return true;
    }

    /// <summary>
    /// The event as the ledger holds it now, for a retry: a member erased while the receiver was
    /// failing has had its personal text removed from the ledger, and a retry (up to days later)
    /// must not carry what the first attempt did. The event as it was when the entry is not found;
    /// null when the ledger could not be read.
    /// </summary>
    private async Task<V1.Event?> RereadAsync(V1.Event e, CancellationToken cancellationToken)
    {
        if (e.Entry is null || !EventCursor.TryParse(e.Cursor, out _, out int index))
        {
            return e;
        }

        PositionedEntry? fresh;
        try
        {
            fresh = await ledger.ReadEventAsync(e.ProgramId, e.MemberId, e.Entry.Sequence, cancellationToken);
        }
        catch (Exception failure) when (failure is not OperationCanceledException)
        {
            // The ledger could not be read: no attempt is made with a copy that may be stale;
            // the caller waits a retry's backoff, as after a failed attempt.
            LogRenewFailed(failure, _webhook.ProgramId, _webhook.WebhookId);
            return null;
        }

        return fresh is null ? e : LoyaltyEvents.ToEvent(fresh, index);
    }

    /// <summary>
    /// Waits while this node's right to send has run out: the lease may be another node's by now.
    /// A slow renewal extends it and sending resumes where it was (giving up here would deliver
    /// the window again); a lost lease ends the worker, which cancels the wait.
    /// </summary>
    private async Task WaitForLeaseAsync(CancellationToken cancellationToken)
    {
        while (Stopwatch.GetTimestamp() > Interlocked.Read(ref _sendUntil))
        {
            await Task.Delay(LeaseWaitPoll, cancellationToken);
        }
    }

    /// <summary>The wait after the <paramref name="attempt"/>th failure: doubling from the first delay, capped, with up to 20 % jitter.</summary>
    private TimeSpan Backoff(int attempt)
    {
        double ms = options.RetryFirstDelayMs * Math.Pow(2, Math.Min(attempt - 1, 30));
        ms = Math.Min(ms, options.RetryDelayMaxSeconds * 1000.0);
        return TimeSpan.FromMilliseconds(ms * (1 + (Random.Shared.NextDouble() * 0.2)));
    }

    /// <summary>Saves the position and extends the lease; false when the lease was lost.</summary>
    private async Task<bool> SaveAsync(CancellationToken cancellationToken)
    {
        // One save at a time (the renewal and the main loop both save), so the position saved never goes back.
        await _saving.WaitAsync(cancellationToken);
        try
        {
            EventMark delivered;
            DateTimeOffset? failingSince;
            lock (_gate)
            {
                (delivered, failingSince) = (_delivered, _failingSince);
            }

            long started = Stopwatch.GetTimestamp();
            DateTimeOffset leaseUntil = clock.GetUtcNow().AddSeconds(options.LeaseSeconds);
            bool held = await store.SaveProgressAsync(_webhook.ProgramId, _webhook.WebhookId, owner,
                EventCursor.Format(delivered.Position, delivered.Index), failingSince, leaseUntil, cancellationToken);
            if (!held)
            {
                LogLeaseLost(_webhook.ProgramId, _webhook.WebhookId);
                return false;
            }

            Interlocked.Exchange(ref _sendUntil, started + LeaseTicks(options, 2.0 / 3));
            return true;
        }
        finally
        {
            _saving.Release();
        }
    }

    private static long LeaseTicks(WebhookOptions options, double share) => (long)(options.LeaseSeconds * share * Stopwatch.Frequency);

    /// <summary>
    /// Every third of the lease: saves progress (so the lease stays while one delivery is retried
    /// for hours) and picks up changed settings (URL, types, a rotated secret). Ends the worker when
    /// the lease is lost or the subscription was disabled or deleted.
    /// </summary>
    private async Task RenewAsync(CancellationTokenSource running)
    {
        TimeSpan every = TimeSpan.FromSeconds(options.LeaseSeconds / 3.0);
        while (!running.IsCancellationRequested)
        {
            await Task.Delay(every, running.Token);
            try
            {
                // The delivery log is written here and when idle, not after every window: under
                // load it keeps only the newest attempts anyway, and each write competes with the
                // ledger's commits (on SQLite for the one write lock).
                await FlushAttemptsAsync();
                WebhookRow? fresh = await store.GetAsync(_webhook.ProgramId, _webhook.WebhookId, running.Token);
                // A worker whose window gave up (the subscription disabled) saves nothing more while
                // its last attempts run out: re-enabled meanwhile and claimed again under the same
                // owner, it would write its old failing time back over the one the re-enable cleared.
                if (fresh is not { Enabled: true } || _gaveUp || !await SaveAsync(running.Token))
                {
                    await running.CancelAsync();
                    return;
                }

                _webhook = fresh;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The database failed: try again next time; sending stops by itself if the lease is not renewed.
                LogRenewFailed(e, _webhook.ProgramId, _webhook.WebhookId);
            }
        }
    }

    private async Task FlushAttemptsAsync()
    {
        // At most what the queue holds now (it is bounded), so a busy delivery cannot keep this looping.
        int pending = _attempts.Count;
        var batch = new List<WebhookAttemptRow>(pending);
        while (batch.Count < pending && _attempts.TryDequeue(out WebhookAttemptRow? attempt))
        {
            batch.Add(attempt);
        }

        if (batch.Count > 0)
        {
            await store.AppendAttemptsAsync(batch, CancellationToken.None);
        }
    }

    /// <summary>The position text as a mark; a subscription's position is always one this engine wrote.</summary>
    private static EventMark ParsePosition(string position) =>
        EventCursor.TryParse(position, out EventPosition at, out int index) ? new EventMark(at, index) : new EventMark(EventPosition.Start, 1);

    /// <summary>The stored type list as a filter, or null for every type.</summary>
    internal static HashSet<string>? TypesOf(string types) =>
        types.Length == 0 ? null : new HashSet<string>(types.Split(',', StringSplitOptions.RemoveEmptyEntries), StringComparer.Ordinal);

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook {ProgramId}/{WebhookId}: delivery of {EventId} failed (attempt {Attempt}): {Error}")]
    private partial void LogAttemptFailed(string programId, string webhookId, string eventId, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook {ProgramId}/{WebhookId} disabled: {Reason}")]
    private partial void LogDisabled(string programId, string webhookId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook {ProgramId}/{WebhookId}: renewing the lease failed; retrying")]
    private partial void LogRenewFailed(Exception exception, string programId, string webhookId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook {ProgramId}/{WebhookId}: this node no longer holds its lease")]
    private partial void LogLeaseLost(string programId, string webhookId);
}
