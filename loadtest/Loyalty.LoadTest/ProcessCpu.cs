using System.Diagnostics;

namespace Loyalty.LoadTest;

/// <summary>
/// The processor time used so far by the load tester and by the engine it spawned, with the
/// purchases acknowledged at that moment. Two readings give the cores each process kept busy
/// between them and its processor time per purchase: the engine's efficiency at the load offered,
/// and how much of the machine the tester took from it. Read from the processes themselves, not
/// from the machine's counters (<see cref="MachineCpu"/>), which on the development machine's
/// virtual machine read 26 and 43 % busy in two runs where the two processes, read from /proc over
/// 20 s of the same runs, added up to 54–57 %.
/// </summary>
internal readonly record struct ProcessCpu(long Timestamp, long Acked, TimeSpan Tester, TimeSpan? Engine)
{
    /// <summary>
    /// The shortest window a reading past the warm-up may open: processor time moves in steps of
    /// 10 ms, too coarse for less.
    /// </summary>
    public static readonly TimeSpan WindowMin = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Where the report's window opens, given the readings at the load's start, just past the
    /// warm-up (null when none was taken before the end) and at the end: past the warm-up when
    /// there was one and what follows it spans <see cref="WindowMin"/> and holds a purchase,
    /// otherwise the load's start.
    /// </summary>
    public static ProcessCpu? WindowStart(ProcessCpu? started, ProcessCpu? pastWarmup, ProcessCpu end, bool warmedUp) =>
        warmedUp && pastWarmup is { } m && end.Timestamp - m.Timestamp >= (long)(WindowMin.TotalSeconds * Stopwatch.Frequency) && end.Acked > m.Acked
            ? m
            : started;

    /// <summary>The tester's own time now (<see cref="Environment.CpuUsage"/>) and the engine's when there is one.</summary>
    public static ProcessCpu Read(long acked, EngineProcess? engine) =>
        new(Stopwatch.GetTimestamp(), acked, Environment.CpuUsage.TotalTime, engine?.ProcessorTime);

    /// <summary>
    /// From <paramref name="earlier"/> to this reading: the cores each process kept busy on
    /// average, and its processor time per purchase acknowledged in between (null when none was,
    /// and the engine's figures null when there is no engine or its time could not be read).
    /// Null when the readings span no time.
    /// </summary>
    public Share? Since(ProcessCpu earlier)
    {
        double seconds = (Timestamp - earlier.Timestamp) / (double)Stopwatch.Frequency;
        if (seconds <= 0)
        {
            return null;
        }

        long purchases = Acked - earlier.Acked;
        double? PerPurchaseUs(TimeSpan used) => purchases > 0 ? used.TotalMicroseconds / purchases : null;
        TimeSpan tester = Tester - earlier.Tester;
        TimeSpan? engine = Engine is { } now && earlier.Engine is { } before ? now - before : null;
        return new Share(tester.TotalSeconds / seconds, PerPurchaseUs(tester),
            engine?.TotalSeconds / seconds, engine is { } e ? PerPurchaseUs(e) : null);
    }

    /// <summary>Cores kept busy, and microseconds of processor time per purchase, of each process.</summary>
    public readonly record struct Share(double TesterCores, double? TesterUsPerPurchase, double? EngineCores, double? EngineUsPerPurchase);
}
