using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;
using Microsoft.Diagnostics.Tracing.Parsers;
using Microsoft.Diagnostics.Tracing.Parsers.Clr;

namespace Loyalty.LoadTest;

/// <summary>
/// The spawned engine's garbage collector, watched from outside through the runtime's event pipe
/// (the channel dotnet-trace uses): what it allocated and how long it paused the engine while the
/// purchases were measured. The allocation target is a figure of this benchmark, and a
/// latency tail is read best beside the pauses that make it.
/// </summary>
/// <remarks>
/// The session asks for the runtime's GC events only, at the verbose level that adds an
/// allocation tick about every 100 KB allocated (each tick says how much since the last), so the
/// sum of the ticks in the window is the engine's allocation to within 100 KB per GC heap. A pause
/// runs from the runtime's suspension of the engine's threads to their restart.
/// </remarks>
internal sealed class EngineGcWatch : IAsyncDisposable
{
    /// <summary>How long to wait for the last events to arrive after the window closes.</summary>
    private static readonly TimeSpan FlushWait = TimeSpan.FromSeconds(2);

    /// <summary>How long stopping the session may take before the watch gives up on the engine.</summary>
    private static readonly TimeSpan StopWaitMax = TimeSpan.FromSeconds(10);

    private readonly EventPipeSession _session;
    private readonly Task _reading;
    private readonly object _lock = new();
    private readonly List<(DateTime At, long Bytes)> _allocations = [];
    private readonly List<Pause> _pauses = [];
    private DateTime? _suspendedAt;
    private bool _suspendedForGc;
    private int _deepestGeneration = -1;

    private EngineGcWatch(EventPipeSession session)
    {
        _session = session;
        _reading = Task.Run(Read);
    }

    /// <summary>One stop of the engine's threads: when it began, how long it lasted, the deepest generation collected.</summary>
    public readonly record struct Pause(DateTime At, double Ms, int Generation);

    /// <summary>Starts watching the process, or returns null (with the reason on the error output) when it cannot be watched.</summary>
    public static EngineGcWatch? TryStart(int processId)
    {
        try
        {
            var client = new DiagnosticsClient(processId);
            var provider = new EventPipeProvider("Microsoft-Windows-DotNETRuntime", EventLevel.Verbose, (long)ClrTraceEventParser.Keywords.GC);
            return new EngineGcWatch(client.StartEventPipeSession(provider, requestRundown: false));
        }
        catch (Exception e) when (e is ServerNotAvailableException or ServerErrorException or UnsupportedCommandException or IOException or TimeoutException)
        {
            Console.Error.WriteLine($"loadtest: the engine's garbage collector cannot be watched ({e.Message}); engine_gc is left out");
            return null;
        }
    }

    /// <summary>
    /// Stops the session once the events up to <paramref name="to"/> have had time to arrive, and
    /// sums what fell between <paramref name="from"/> and <paramref name="to"/> (UTC); the pauses
    /// it lists are timed from <paramref name="origin"/> (the start of the run, as the timeline is).
    /// </summary>
    public async Task<EngineGc> SummariseAsync(DateTime from, DateTime to, long purchases, DateTime origin)
    {
        TimeSpan left = to + FlushWait - DateTime.UtcNow;
        if (left > TimeSpan.Zero)
        {
            await Task.Delay(left);
        }

        await StopAsync();
        lock (_lock)
        {
            long bytes = _allocations.Where(a => a.At >= from && a.At < to).Sum(a => a.Bytes);
            Pause[] pauses = [.. _pauses.Where(p => p.At >= from && p.At < to)];
            return new EngineGc(bytes, purchases, pauses, origin);
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _session.Dispose();
    }

    private async Task StopAsync()
    {
        try
        {
            using var limit = new CancellationTokenSource(StopWaitMax);
            await _session.StopAsync(limit.Token);
            await _reading.WaitAsync(StopWaitMax);
        }
        catch (Exception e) when (e is ServerNotAvailableException or ServerErrorException or IOException or ObjectDisposedException or EndOfStreamException
            or OperationCanceledException or TimeoutException)
        {
            // The engine has gone or stopped answering; what was read is kept.
        }
    }

    private void Read()
    {
        try
        {
            using var source = new EventPipeEventSource(_session.EventStream);
            source.Clr.GCAllocationTick += OnAllocation;
            source.Clr.GCSuspendEEStart += OnSuspend;
            source.Clr.GCStart += e => Locked(() => _deepestGeneration = Math.Max(_deepestGeneration, e.Depth));
            source.Clr.GCRestartEEStop += OnRestart;
            source.Process();
        }
        catch (Exception e)
        {
            // The stream ended with the session or the engine, or could not be read further: what
            // was read is kept, and the run goes on (the figures then cover less).
            if (e is not (EndOfStreamException or IOException or ObjectDisposedException))
            {
                Console.Error.WriteLine($"loadtest: reading the engine's GC events stopped: {e.Message}");
            }
        }
    }

    private void OnSuspend(GCSuspendEETraceData e) => Locked(() =>
    {
        // Suspensions for a collection, or for the final marking of a background one (which has
        // no start event of its own); a debugger's or a shutdown's are not GC pauses.
        (_suspendedAt, _deepestGeneration) = (e.TimeStamp.ToUniversalTime(), -1);
        _suspendedForGc = e.Reason is GCSuspendEEReason.SuspendForGC or GCSuspendEEReason.SuspendForGCPrep;
    });

    private void OnAllocation(GCAllocationTickTraceData e) => Locked(() => _allocations.Add((e.TimeStamp.ToUniversalTime(), e.AllocationAmount64)));

    private void OnRestart(TraceEvent e) => Locked(() =>
    {
        if (_suspendedAt is { } at && _suspendedForGc)
        {
            // A pause with no collection started in it belongs to a background gen2 collection.
            _pauses.Add(new Pause(at, (e.TimeStamp.ToUniversalTime() - at).TotalMilliseconds, _deepestGeneration >= 0 ? _deepestGeneration : 2));
        }

        _suspendedAt = null;
    });

    private void Locked(Action change)
    {
        lock (_lock)
        {
            change();
        }
    }
}

/// <summary>The engine's collections over the measured purchases.</summary>
internal sealed record EngineGc(long AllocatedBytes, long Purchases, IReadOnlyList<EngineGcWatch.Pause> Pauses, DateTime Origin)
{
    /// <summary>The longest pauses listed one by one in the report.</summary>
    public const int ListedPausesMax = 50;

    /// <summary>A pause longer than this (ms, the p99.9 target) is counted in the report.</summary>
    public const double LongPauseMs = 20;

    /// <summary>The JSON report's view of it.</summary>
    public object ToReport() => new
    {
        allocated_mib = Math.Round(AllocatedBytes / 1048576.0, 1),
        allocated_bytes_per_purchase = Purchases == 0 ? 0 : AllocatedBytes / Purchases,
        gen0 = Pauses.Count(p => p.Generation == 0),
        gen1 = Pauses.Count(p => p.Generation == 1),
        gen2 = Pauses.Count(p => p.Generation == 2),
        pause_ms_total = Math.Round(Pauses.Sum(p => p.Ms), 1),
        pause_ms_max = Math.Round(Pauses.Count == 0 ? 0 : Pauses.Max(p => p.Ms), 1),
        pauses_over_20ms = Pauses.Count(p => p.Ms > LongPauseMs),
        // The longest pauses, at seconds from the start of the run (as the timeline), in time order.
        longest = Pauses.OrderByDescending(p => p.Ms).Take(ListedPausesMax).OrderBy(p => p.At)
            .Select(p => new { s = Math.Round((p.At - Origin).TotalSeconds, 2), ms = Math.Round(p.Ms, 1), gen = p.Generation }),
    };
}
