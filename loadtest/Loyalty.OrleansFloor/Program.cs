using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HdrHistogram;
using Loyalty.OrleansFloor;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

// The latency floor Orleans itself sets for one activation per member: a silo holding N
// activations of a grain that does nothing but add a number, called at a fixed rate from the
// silo's own process (as the engine's gateway calls its member grains). Each call can allocate
// garbage of a given size (what a real purchase allocates) and can keep the call's id in the
// grain (a young object stored into an old one, as a member's new lot does). With --ledger, each
// call commits one ledger entry through the engine's commit queue and store before it answers;
// with --direct as well, the loop appends to the ledger itself, with no grain: the storage's floor
// alone. Prints one JSON line.
FloorOptions options = FloorOptions.Parse(args);
PerCall.Garbage = options.GarbageBytes;
PerCall.KeepId = options.KeepId;
PerCall.AwaitOnce = options.AwaitOnce;
await using FloorLedger? ledger = options.Ledger == FloorLedger.Kind.None ? null : await FloorLedger.OpenAsync(options);
PerCall.Ledger = options.Direct ? null : ledger;

using IHost host = Host.CreateDefaultBuilder()
    .ConfigureLogging(l => l.SetMinimumLevel(LogLevel.Error))
    .UseOrleans(silo =>
    {
        silo.UseLocalhostClustering(siloPort: options.SiloPort, gatewayPort: options.GatewayPort);
        // The engine's defaults: idle members stay for 300 s. With a ledger, at least for the whole
        // run: a grain keeps its entries' numbers only in memory, and one collected and made again
        // would number from 1 again (the engine's member reads its number back from the ledger).
        silo.Configure<GrainCollectionOptions>(o =>
        {
            o.CollectionAge = TimeSpan.FromSeconds(options.Ledger == FloorLedger.Kind.None ? 300 : Math.Max(300, 2 * options.DurationSeconds + 60));
            o.CollectionQuantum = TimeSpan.FromSeconds(75);
        });
    })
    .Build();
if (!options.Direct)
{
    await host.StartAsync();
}

IGrainFactory grains = host.Services.GetRequiredService<IGrainFactory>();
// As the engine's gateway reaches its members: without Orleans' lookup of the grain type per call.
var counters = new Loyalty.GrainReferences<ICounterGrain>(grains);

string[] keys = Enumerable.Range(0, options.Activations).Select(Key).ToArray();
// With --direct, each member's newest entry number (the loop numbers entries, as a grain would).
long[] sequences = new long[options.Activations];
var activating = Stopwatch.StartNew();
// Every member is activated (or, with --direct, given its first entry) before the clock starts;
// with a ledger, each member's first entry is in it then, as an enrolment would be.
await Parallel.ForAsync(0, options.Activations, new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (i, _) =>
{
    if (options.Direct)
    {
        await CommitAsync(i);
    }
    else
    {
        await counters.Get(keys[i]).AddAsync("warm", 0);
    }
});
double activationSeconds = activating.Elapsed.TotalSeconds;
GC.Collect();

var latency = new LongHistogram(TimeSpan.FromSeconds(60).Ticks / 10, 3);
var random = new Random(1);
TimeSpan pauseBefore = GC.GetTotalPauseDuration();
(int gen0, int gen1, int gen2) = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
long calls = checked((long)options.RatePerSecond * options.DurationSeconds);
// Calls are counted as they end, not kept: a list of every call's task would live through the
// whole run, tens of thousands of objects aged into the older generations that the engine's
// gateway does not keep, and the floor would measure that collector work too.
long ended = 0;
var allEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
// The load tester's pacer: Task.Delay would add milliseconds of its own lateness to the figures.
using var pacer = new Loyalty.LoadTest.Pacer();
// What pacing alone allocates, with whatever the process does meanwhile (Orleans' timers, the
// runtime), at the same rate without calls: taken off the figure per call below.
// At most PacingBaselineSecondsMax of it: enough calls' worth to average over, and short beside a run.
const int PacingBaselineSecondsMax = 5;
long pacedOnly = Math.Min(calls, (long)options.RatePerSecond * PacingBaselineSecondsMax);
long pacingBefore = GC.GetTotalAllocatedBytes(precise: true);
long pacingStart = Stopwatch.GetTimestamp();
for (long k = 0; k < pacedOnly; k++)
{
    await pacer.WaitUntilAsync(DueAt(pacingStart, k));
}

double pacingBytesPerCall = (double)(GC.GetTotalAllocatedBytes(precise: true) - pacingBefore) / pacedOnly;

// Everything the process allocates while the calls run; less the pacing's share and the garbage
// asked for, what is left is Orleans' path and this loop's state machine per call (the engine's
// gateway has a state machine of its own per purchase), and with a ledger its queue, encoding and driver.
// The ledger's counts and syncs start here too: the warm-up is not the run.
ledger?.StartClock();
long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
long start = Stopwatch.GetTimestamp();
for (long k = 0; k < calls; k++)
{
    // Open loop: each call's latency counts from when it was due, not from when it went out.
    long due = DueAt(start, k);
    await pacer.WaitUntilAsync(due);
    // The keys are made before the clock starts, and an id per call only when the grain keeps it:
    // the figure per call is then Orleans' path and this loop's state machine, not the benchmark's strings.
    string id = options.KeepId ? "c" + k.ToString(CultureInfo.InvariantCulture) : "c";
    _ = CallAsync(random.Next(options.Activations), id, due);
}

await allEnded.Task;
long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
double Ms(double percentile) => latency.GetValueAtPercentile(percentile) / 1000.0;
Console.WriteLine(JsonSerializer.Serialize(new
{
    activations = options.Activations,
    activation_s = Math.Round(activationSeconds, 1),
    rate_per_s = options.RatePerSecond,
    duration_s = options.DurationSeconds,
    garbage_bytes_per_call = options.GarbageBytes,
    keep_id = options.KeepId,
    await_once = options.AwaitOnce,
    ledger = options.Ledger.ToString().ToLowerInvariant(),
    direct = options.Direct,
    latency_ms = new { p50 = Ms(50), p99 = Ms(99), p999 = Ms(99.9), max = latency.GetMaxValue() / 1000.0 },
    // The garbage asked for and the pacing's share are left out: what remains is Orleans' call path plus this loop's state machine (and the ledger's path, with one).
    allocated_bytes_per_call = Math.Round((double)allocated / calls - PerCall.GarbageBytesPerCall - pacingBytesPerCall),
    pacing_bytes_per_call = Math.Round(pacingBytesPerCall),
    waits = PerCall.Waits,
    gc = new
    {
        pause_ms = Math.Round((GC.GetTotalPauseDuration() - pauseBefore).TotalMilliseconds, 1),
        gen0 = GC.CollectionCount(0) - gen0,
        gen1 = GC.CollectionCount(1) - gen1,
        gen2 = GC.CollectionCount(2) - gen2,
    },
    peak_working_set_mib = Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0),
    // A grain called last keeps its id when asked to: the option did what it says.
    kept_id = !options.Direct && await counters.Get(keys[0]).LastIdAsync() is not null,
    // From when the clock started (the warm-up's entry per member is not counted).
    ledger_entries_committed = ledger?.EntriesCommitted ?? 0,
    ledger_batches_committed = ledger?.BatchesCommitted ?? 0,
    // With --ledger file: how long its syncs took while the calls ran (the disk's own answer time).
    ledger_sync_ms = ledger?.SyncMs(50) is { } syncP50
        ? new { p50 = syncP50, p99 = ledger.SyncMs(99), p999 = ledger.SyncMs(99.9), max = ledger.SyncMs(100) }
        : null,
}));
if (!options.Direct)
{
    await host.StopAsync();
}

return 0;

async Task CallAsync(int member, string id, long due)
{
    try
    {
        if (options.Direct)
        {
            await CommitAsync(member);
        }
        else
        {
            await counters.Get(keys[member]).AddAsync(id, 1);
        }

        long micros = Stopwatch.GetElapsedTime(due).Ticks / 10;
        lock (latency)
        {
            // Held within the histogram's 60 s (a ledger slower than the rate can fall that far behind).
            latency.RecordValue(Math.Clamp(micros, 0, latency.HighestTrackableValue));
        }
    }
    catch (Exception e)
    {
        // The first failure ends the run with it.
        allEnded.TrySetException(e);
    }
    finally
    {
        if (Interlocked.Increment(ref ended) == calls)
        {
            allEnded.TrySetResult();
        }
    }
}

// Member i's next entry, straight to the ledger (--direct); numbered before the first wait.
async Task CommitAsync(int i)
{
    long sequence = ++sequences[i];
    if (!await ledger!.AppendAsync(keys[i], sequence))
    {
        throw FloorLedger.NotWritten(keys[i], sequence);
    }
}

// When call k of a pass that started at start is due (Stopwatch ticks), at the run's rate.
long DueAt(long start, long k) => start + (long)(k * (double)Stopwatch.Frequency / options.RatePerSecond);

static string Key(int i) => "m" + i.ToString(CultureInfo.InvariantCulture);
