using System.Diagnostics;
using Loyalty.Host.Webhooks;
using Loyalty.Storage;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Host.Grpc;

/// <summary>
/// gRPC health checking (<c>grpc.health.v1.Health</c>) for load balancers and orchestrators,
/// answered without a key (a probe carries none, and the answer says nothing about any program).
/// Service <c>""</c> and <c>"ready"</c>: the silo is active in its cluster, the database answers,
/// and the node is not stopping — a draining node turns not-ready first. Service <c>"live"</c>:
/// the process serves calls.
/// </summary>
public static class Health
{
    /// <summary>The tag of the checks that make a node ready.</summary>
    public const string ReadyTag = "ready";

    /// <summary>The tag of the check that says the process serves.</summary>
    public const string LiveTag = "live";

    /// <summary>Adds the checks and the gRPC health service.</summary>
    public static IServiceCollection AddLoyaltyHealth(this IServiceCollection services)
    {
        services.AddHealthChecks()
            .AddCheck("process", () => HealthCheckResult.Healthy(), tags: [LiveTag])
            .AddCheck<SiloActiveCheck>("silo", tags: [ReadyTag])
            .AddCheck<DatabaseCheck>("database", tags: [ReadyTag])
            .AddCheck<NotStoppingCheck>("not-stopping", tags: [ReadyTag]);
        services.AddGrpcHealthChecks(o =>
        {
            o.Services.Map("", r => r.Tags.Contains(ReadyTag));
            o.Services.Map(ReadyTag, r => r.Tags.Contains(ReadyTag));
            // Serving as long as the process answers.
            o.Services.Map(LiveTag, r => r.Tags.Contains(LiveTag));
            // Check runs the checks when asked, so a probe sees a drain at once; Watch follows the publisher below.
            o.UseHealthChecksCache = false;
        });
        services.Configure<HealthCheckPublisherOptions>(o =>
        {
            // The publisher feeds Watch; it starts once a node has had time to join (each
            // unhealthy result is logged as an error, and a starting silo is not yet active).
            o.Delay = TimeSpan.FromSeconds(10);
            o.Period = TimeSpan.FromSeconds(2);
        });
        services.AddSingleton<OpenStreams>();
        services.AddSingleton<DatabaseProbe>();
        services.AddSingleton<DrainDelay>();
        services.AddHostedService(s => s.GetRequiredService<DrainDelay>());
        return services;
    }

    /// <summary>Ready while this silo is active in the cluster's membership.</summary>
    private sealed class SiloActiveCheck(ISiloStatusOracle silo) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            Task.FromResult(silo.CurrentStatus == SiloStatus.Active
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy($"the silo is {silo.CurrentStatus}"));
    }

    /// <summary>Ready while the engine's database answers a query, within two seconds (see <see cref="DatabaseProbe"/>).</summary>
    private sealed class DatabaseCheck(DatabaseProbe probe) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            probe.CheckAsync();
    }

    /// <summary>
    /// The database check, run at most once a second whatever the number of probes: health checks
    /// need no key, and a flood of them must not become a flood of queries on the connections the
    /// ledger shares. Probes within a second of a check (or while one runs) get its result.
    /// </summary>
    internal sealed class DatabaseProbe(IAccessStore store, TimeProvider clock)
    {
        /// <summary>How long the database may take to answer before the node is not ready.</summary>
        private static readonly TimeSpan DatabaseAnswerMax = TimeSpan.FromSeconds(2);

        /// <summary>How long one check's result answers later probes.</summary>
        private static readonly TimeSpan ResultKept = TimeSpan.FromSeconds(1);

        private readonly Lock _gate = new();
        private Task<HealthCheckResult>? _last;
        private long _lastStarted;

        /// <summary>The latest check's result, or a new check's when that one is older than <see cref="ResultKept"/>.</summary>
        public Task<HealthCheckResult> CheckAsync()
        {
            lock (_gate)
            {
                // Real time, not the engine's clock (a test's may stand still).
                if (_last is null || Stopwatch.GetElapsedTime(_lastStarted) >= ResultKept)
                {
                    _lastStarted = Stopwatch.GetTimestamp();
                    // Off the lock: SQLite's reads run synchronously.
                    _last = Task.Run(RunAsync);
                }

                return _last;
            }
        }

        private async Task<HealthCheckResult> RunAsync()
        {
            // Its own time limit, not a probe's token: the result is shared by every probe meanwhile.
            using var timeout = new CancellationTokenSource(DatabaseAnswerMax);
            try
            {
                // The newest key changes: one indexed query on a small table.
                await store.ReadKeysChangedSinceAsync(clock.GetUtcNow(), timeout.Token);
                return HealthCheckResult.Healthy();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return HealthCheckResult.Unhealthy("the database does not answer: " + e.GetType().Name);
            }
        }
    }

    /// <summary>Not ready from the moment the node starts stopping (SIGTERM), so that traffic moves away before it goes.</summary>
    private sealed class NotStoppingCheck(DrainDelay drain, IHostApplicationLifetime lifetime) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            Task.FromResult(drain.Draining || lifetime.ApplicationStopping.IsCancellationRequested
                ? HealthCheckResult.Unhealthy("the node is stopping")
                : HealthCheckResult.Healthy());
    }
}

/// <summary>
/// The first steps of stopping: the node says not-ready (see <see cref="Health"/>) and keeps
/// serving for <see cref="GatewayOptions.DrainDelaySeconds"/>, so that load balancers and clients
/// move away; then it ends its open purchase streams (each answers what it took, then ends with
/// UNAVAILABLE) and waits for them, and ends the webhook redeliveries asked for by hand (see
/// <see cref="WebhookDispatcher.EndManualAsync"/>), before the gateway stops taking calls and the
/// silo flushes its ledger and hands its grains over.
/// </summary>
internal sealed partial class DrainDelay(IOptions<GatewayOptions> options, OpenStreams streams, WebhookDispatcher webhooks, ILogger<DrainDelay> logger) : IHostedLifecycleService
{
    /// <summary>How long the open streams may take to answer what they took and end.</summary>
    public static readonly TimeSpan StreamsEndMax = TimeSpan.FromSeconds(15);

    private volatile bool _draining;

    /// <summary>Whether the node has begun to stop (the host's stopping hooks run before its ApplicationStopping token fires).</summary>
    public bool Draining => _draining;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _draining = true;
        int seconds = Math.Max(0, options.Value.DrainDelaySeconds);
        if (seconds > 0)
        {
            LogDraining(seconds);
            await Task.Delay(TimeSpan.FromSeconds(seconds), cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        int open = streams.Count;
        streams.End();
        if (open > 0)
        {
            LogEndingStreams(open);
        }

        if (!await streams.WaitClosedAsync(StreamsEndMax, cancellationToken))
        {
            LogStreamsStillOpen(streams.Count, StreamsEndMax.TotalSeconds);
        }

        await webhooks.EndManualAsync(cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Information, Message = "Stopping: not ready, still serving for {Seconds} s")]
    private partial void LogDraining(int seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Stopping: ending {Count} open purchase streams")]
    private partial void LogEndingStreams(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping: {Count} purchase streams still open after {Seconds} s; the server's stop ends them")]
    private partial void LogStreamsStillOpen(int count, double seconds);
}
