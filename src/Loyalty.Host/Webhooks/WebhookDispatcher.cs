using Loyalty.Storage;
using Microsoft.Extensions.Options;

namespace Loyalty.Host.Webhooks;

/// <summary>
/// Takes the leases of webhook subscriptions no live node holds and runs a <see cref="WebhookWorker"/>
/// for each, from when the silo is active until it stops. Every node does this; the lease in the
/// database gives each subscription to exactly one at a time, and a dead node's subscriptions go
/// to another once their leases run out.
/// </summary>
public sealed partial class WebhookDispatcher(
    ILedgerStore ledger,
    IWebhookStore store,
    WebhookSender sender,
    LedgerCommits commits,
    IOptions<WebhookOptions> options,
    TimeProvider clock,
    ILogger<WebhookDispatcher> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    /// <summary>How long a worker must have had nothing to deliver before it gives its place to a subscription that waits.</summary>
    private static readonly TimeSpan YieldIdleMin = TimeSpan.FromSeconds(1);


    /// <summary>How long a stopping node waits for its workers to save their positions.</summary>
    private static readonly TimeSpan StopWaitMax = TimeSpan.FromSeconds(10);

    /// <summary>How long a stopping node then waits for abandoned attempts to be logged.</summary>
    private static readonly TimeSpan AbandonWaitMax = TimeSpan.FromSeconds(3);

    /// <summary>The longest <see cref="EndManualAsync"/> takes: a step of the node's stop, counted in the host's shutdown time.</summary>
    public static readonly TimeSpan ManualEndMax = StopWaitMax + AbandonWaitMax;

    private readonly WebhookOptions _options = options.Value;
    private readonly Dictionary<(string, string), (WebhookWorker Worker, Task Run)> _workers = [];
    private readonly CancellationTokenSource _stop = new();

    /// <summary>Cancelled when a stopping node will wait no longer for attempts under way (a receiver that answers slowly, with a long Webhooks:TimeoutSeconds).</summary>
    private readonly CancellationTokenSource _abandon = new();
    private Task? _loop;

    /// <summary>Redeliveries asked for by hand and still under way (see <see cref="TryRunManual"/>); guarded by <see cref="_manualLock"/>.</summary>
    private readonly HashSet<Task> _manual = [];
    private readonly Lock _manualLock = new();

    /// <summary>Set when the node's stop has begun with <see cref="EndManualAsync"/>: no redelivery by hand starts after it; guarded by <see cref="_manualLock"/>.</summary>
    private bool _manualEnded;

    /// <summary>Cancelled when a stopping node will wait no longer for the redeliveries by hand under way.</summary>
    private readonly CancellationTokenSource _manualAbandon = new();

    /// <summary>Names this node in leases: host, process and a random part (a restarted process is another owner).</summary>
    public string Owner { get; } = $"{Bounded.Echo(Environment.MachineName)}/{Environment.ProcessId}/{Guid.NewGuid():N}";

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(WebhookDispatcher), ServiceLifecycleStage.Active, StartAsync, StopAsync);

    private Task StartAsync(CancellationToken cancellationToken)
    {
        if (_options.Enabled)
        {
            _loop = Task.Run(() => LoopAsync(_stop.Token), CancellationToken.None);
        }

        return Task.CompletedTask;
    }

    private async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop.ContinueWith(static _ => { }, TaskScheduler.Default);
        }

        Task[] running = [.. _workers.Values.Select(w => w.Run), .. ManualUnderWay()];
        await WaitThenAbandonAsync(running, async _ =>
        {
            await _abandon.CancelAsync();
            await _manualAbandon.CancelAsync();
        }, cancellationToken);

        foreach (((string program, string webhook), (WebhookWorker _, Task run)) in _workers)
        {
            // Another node may take a stopped worker's subscription at once instead of after the
            // lease; one still running keeps its lease, which runs out after it stops sending.
            if (run.IsCompleted && !cancellationToken.IsCancellationRequested)
            {
                await store.ReleaseAsync(program, webhook, Owner, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Runs a redelivery asked for by hand (<paramref name="attempt"/>: its send and its log entry,
    /// given the token this node cancels when it will wait no longer to stop). A stopping node
    /// waits for it for a while and then abandons it (see <see cref="EndManualAsync"/>), so that it
    /// is logged as abandoned rather than holding the stop for the attempt's whole time limit or
    /// being cut off unlogged when the process ends. Null once the node has begun to stop: no new
    /// attempt starts then.
    /// </summary>
    public Task<T>? TryRunManual<T>(Func<CancellationToken, Task<T>> attempt)
    {
        Task<T> run;
        lock (_manualLock)
        {
            // Checked and added under the lock that EndManualAsync and StopAsync take to see what
            // is under way: an attempt is either refused here or waited for there.
            if (_manualEnded || _stop.IsCancellationRequested)
            {
                return null;
            }

            CancellationToken abandon = _manualAbandon.Token;
            run = Task.Run(() => attempt(abandon), CancellationToken.None);
            _manual.Add(run);
        }

        run.ContinueWith(static (done, state) => ((WebhookDispatcher)state!).Untrack(done), this,
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return run;
    }

    /// <summary>
    /// Ends the redeliveries by hand as the node begins to stop, before the gateway stops taking
    /// calls: that stop waits for the calls under way, a redelivery's among them, and a receiver
    /// that never answers would hold it for the attempt's whole limit (up to 120 s). No new one
    /// starts; those under way have as long to finish as the workers' attempts, then are abandoned:
    /// those still waiting for the receiver end with <see cref="WebhookSender.Abandoned"/> and are
    /// logged as such.
    /// </summary>
    public async Task EndManualAsync(CancellationToken cancellationToken)
    {
        Task[] running;
        lock (_manualLock)
        {
            _manualEnded = true;
            running = [.. _manual];
        }

        await WaitThenAbandonAsync(running, left =>
        {
            LogAbandoningManual(left);
            return _manualAbandon.CancelAsync();
        }, cancellationToken);
    }

    /// <summary>
    /// A stopping node's wait for the attempts under way: up to <see cref="StopWaitMax"/>, then,
    /// for those still running, <paramref name="abandon"/> (given how many), so that they end as
    /// abandoned and are logged as such rather than cut off unlogged when the process exits, and
    /// up to <see cref="AbandonWaitMax"/> more for those logs.
    /// </summary>
    private async Task WaitThenAbandonAsync(Task[] running, Func<int, Task> abandon, CancellationToken cancellationToken)
    {
        if (running.Length == 0)
        {
            return;
        }

        Task all = Task.WhenAll(running);
        // A failed attempt is its caller's to report; here it is only waited for.
        _ = all.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        await Task.WhenAny(all, Task.Delay(StopWaitMax, clock, cancellationToken));
        if (!all.IsCompleted)
        {
            await abandon(running.Count(t => !t.IsCompleted));
            await Task.WhenAny(all, Task.Delay(AbandonWaitMax, clock, cancellationToken));
        }
    }

    private void Untrack(Task done)
    {
        lock (_manualLock)
        {
            _manual.Remove(done);
        }
    }

    private Task[] ManualUnderWay()
    {
        lock (_manualLock)
        {
            return [.. _manual];
        }
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        TimeSpan poll = TimeSpan.FromMilliseconds(Math.Max(_options.PollIntervalMs, 200));
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await ForgetAsync(stop);
                int room = _options.WorkersPerNodeMax - _workers.Count;
                DateTimeOffset now = clock.GetUtcNow();
                if (room > 0)
                {
                    IReadOnlyList<WebhookRow> claimed = await store.ClaimAsync(Owner, now, now.AddSeconds(_options.LeaseSeconds), room, stop);
                    foreach (WebhookRow row in claimed.Where(r => !_workers.ContainsKey((r.ProgramId, r.WebhookId))))
                    {
                        var worker = new WebhookWorker(row, Owner, ledger, store, sender, commits, _options, clock, logger, _abandon.Token);
                        _workers[worker.Key] = (worker, Task.Run(() => RunWorkerAsync(worker, stop), CancellationToken.None));
                    }
                }
                else if (await store.CountWaitingAsync(now, stop) > 0)
                {
                    TakeTurns();
                }

                await Task.Delay(poll, stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogClaimFailed(e);
                await Task.Delay(poll, CancellationToken.None);
            }
        }
    }

    private async Task RunWorkerAsync(WebhookWorker worker, CancellationToken stop)
    {
        try
        {
            await worker.RunAsync(stop);
        }
        catch (Exception e) when (e is not OperationCanceledException || !stop.IsCancellationRequested)
        {
            // The database failed mid-step: the worker ends, and this node claims the subscription
            // again at its next look (it still holds the lease), from the saved position. Logged
            // while the node stops too (a cancellation then is the normal end, and is not).
            LogWorkerFailed(e, worker.Key.ProgramId, worker.Key.WebhookId);
        }
    }

    /// <summary>
    /// On a full node, with subscriptions waiting that no node holds: asks one worker to give its
    /// place up, the one idle longest, else the one that has held its place longest. One at a time
    /// per node (the count of those waiting is the cluster's, and every full node sees it), so turns
    /// churn no more than a place per poll; a failing worker asked gives its place up at its next
    /// retry's wait, so no waiting subscription starves behind one retrying for days.
    /// Without turns, subscriptions beyond every node's room would never be delivered.
    /// </summary>
    private void TakeTurns()
    {
        // One asked at a time, unless the one asked is slow to go (a busy worker goes after its
        // window, which a slow receiver can make minutes): then another is asked too.
        if (_workers.Values.Any(w => w.Worker.Yielding && w.Worker.AskedFor < _options.TurnAfter))
        {
            return;
        }

        _workers.Values.Select(w => w.Worker)
            .Where(w => !w.Yielding && (w.IdleFor >= YieldIdleMin || w.HeldFor >= _options.TurnAfter))
            .OrderByDescending(w => w.IdleFor).ThenByDescending(w => w.HeldFor)
            .FirstOrDefault()?.Yield();
    }

    /// <summary>
    /// Drops the workers that ended (lease lost, disabled, failed), so their subscriptions can be
    /// claimed again; a worker that ended to give its place up releases its lease, queued behind
    /// the subscriptions that waited longer.
    /// </summary>
    private async Task ForgetAsync(CancellationToken stop)
    {
        foreach (((string program, string webhook) key, (WebhookWorker worker, Task _)) in _workers.Where(w => w.Value.Run.IsCompleted).ToList())
        {
            _workers.Remove(key);
            if (worker.Yielding)
            {
                await store.YieldAsync(key.program, key.webhook, Owner, clock.GetUtcNow(), stop);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping: abandoning {Count} webhook redeliveries asked for by hand that have no answer yet")]
    private partial void LogAbandoningManual(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Claiming webhook subscriptions failed; retrying")]
    private partial void LogClaimFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook {ProgramId}/{WebhookId}: delivery stopped by an error; it resumes from its saved position")]
    private partial void LogWorkerFailed(Exception exception, string programId, string webhookId);
}
