using System.Diagnostics;
using Loyalty.LoadTest;

namespace Loyalty.Tests.LoadTest;

/// <summary>The tester's and the spawned engine's processor time, as the load tester reports it per purchase.</summary>
public sealed class ProcessCpuTests
{
    private static readonly long Second = Stopwatch.Frequency;

    [Fact]
    public void Since_GivesEachProcesssCoresAndTimePerPurchase()
    {
        var before = new ProcessCpu(Timestamp: 10 * Second, Acked: 1_000, Tester: TimeSpan.FromSeconds(3), Engine: TimeSpan.FromSeconds(7));
        var after = new ProcessCpu(Timestamp: 30 * Second, Acked: 41_000, Tester: TimeSpan.FromSeconds(13), Engine: TimeSpan.FromSeconds(23));

        ProcessCpu.Share share = after.Since(before) ?? throw new Xunit.Sdk.XunitException("no interval");

        Assert.Equal(0.5, share.TesterCores, 6);
        Assert.Equal(250.0, share.TesterUsPerPurchase!.Value, 6); // 10 s over 40,000 purchases
        Assert.Equal(0.8, share.EngineCores!.Value, 6);
        Assert.Equal(400.0, share.EngineUsPerPurchase!.Value, 6);
    }

    [Fact]
    public void Since_LeavesTheEngineOut_WhenEitherReadingHasNone()
    {
        var before = new ProcessCpu(0, 0, TimeSpan.Zero, Engine: null);
        var after = new ProcessCpu(Second, 100, TimeSpan.FromMilliseconds(200), Engine: TimeSpan.FromSeconds(1));

        ProcessCpu.Share share = after.Since(before) ?? throw new Xunit.Sdk.XunitException("no interval");

        Assert.Null(share.EngineCores);
        Assert.Null(share.EngineUsPerPurchase);
        Assert.Equal(0.2, share.TesterCores, 6);
    }

    [Fact]
    public void Since_GivesNoTimePerPurchase_WithoutPurchases_AndNothingForAnEmptyInterval()
    {
        var before = new ProcessCpu(0, 500, TimeSpan.Zero, TimeSpan.Zero);
        var after = new ProcessCpu(Second, 500, TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(30));

        ProcessCpu.Share share = after.Since(before) ?? throw new Xunit.Sdk.XunitException("no interval");

        Assert.Null(share.TesterUsPerPurchase);
        Assert.Null(share.EngineUsPerPurchase);
        Assert.Equal(0.03, share.EngineCores!.Value, 6);
        Assert.Null(before.Since(before));
    }

    [Fact]
    public void WindowStart_IsPastTheWarmup_WhenWhatFollowsSpansTheMinimumAndHoldsPurchases()
    {
        var started = new ProcessCpu(0, 0, TimeSpan.Zero, null);
        var pastWarmup = new ProcessCpu(5 * Second, 10_000, TimeSpan.FromSeconds(1), null);
        var end = new ProcessCpu(35 * Second, 70_000, TimeSpan.FromSeconds(8), null);

        Assert.Equal(pastWarmup, ProcessCpu.WindowStart(started, pastWarmup, end, warmedUp: true));
    }

    [Theory]
    [InlineData(false, 30, 60_000)] // no warm-up: the whole load
    [InlineData(true, 0.5, 1_000)] // under WindowMin past the warm-up
    [InlineData(true, 30, 0)] // nothing acknowledged past the warm-up
    public void WindowStart_FallsBackToTheLoadsStart(bool warmedUp, double secondsAfter, long ackedAfter)
    {
        var started = new ProcessCpu(0, 0, TimeSpan.Zero, null);
        var pastWarmup = new ProcessCpu(5 * Second, 10_000, TimeSpan.FromSeconds(1), null);
        var end = new ProcessCpu(pastWarmup.Timestamp + (long)(secondsAfter * Second), pastWarmup.Acked + ackedAfter, TimeSpan.FromSeconds(8), null);

        Assert.Equal(started, ProcessCpu.WindowStart(started, pastWarmup, end, warmedUp));
        Assert.Equal(started, ProcessCpu.WindowStart(started, pastWarmup: null, end, warmedUp: true)); // none taken before the end
    }

    [Fact]
    public void Read_OfThisProcess_GrowsWithTheWorkItDoes()
    {
        ProcessCpu before = ProcessCpu.Read(0, engine: null);
        // Spin until this process has used 50 ms more by the runtime's own count (a loaded machine may take longer to give it).
        TimeSpan target = Environment.CpuUsage.TotalTime + TimeSpan.FromMilliseconds(50);
        var spinning = Stopwatch.StartNew();
        while (Environment.CpuUsage.TotalTime < target && spinning.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.SpinWait(1_000);
        }

        ProcessCpu after = ProcessCpu.Read(1, engine: null);

        Assert.True(after.Tester - before.Tester >= TimeSpan.FromMilliseconds(50), $"{(after.Tester - before.Tester).TotalMilliseconds} ms of processor time in {spinning.Elapsed.TotalSeconds:F1} s");
        Assert.Null(after.Engine);
    }
}
