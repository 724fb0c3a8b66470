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
