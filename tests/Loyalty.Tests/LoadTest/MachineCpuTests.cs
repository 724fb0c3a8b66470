using Loyalty.LoadTest;

namespace Loyalty.Tests.LoadTest;

/// <summary>The machine's processor counters the load tester reports beside each second's tail.</summary>
public sealed class MachineCpuTests
{
    [Fact]
    public void Parse_ReadsBusyIdleAndStolenTicks_FromTheAggregateLine()
    {
        // user nice system idle iowait irq softirq steal guest guest_nice
        MachineCpu cpu = MachineCpu.Parse("cpu  100 5 40 800 20 3 2 30 7 0") ?? throw new Xunit.Sdk.XunitException("not parsed");

        Assert.Equal(100 + 5 + 40 + 3 + 2, cpu.Busy);
        Assert.Equal(800 + 20, cpu.Idle);
        Assert.Equal(30, cpu.Steal);
        Assert.Equal(1000, cpu.Total);
    }

    [Theory]
    [InlineData("cpu0 1 2 3 4 5 6 7 8")]
    [InlineData("cpu 1 2 3")]
    [InlineData("cpu 1 2 3 x 5 6 7 8")]
    [InlineData("")]
    public void Parse_RefusesWhatIsNotTheAggregateLine(string line) => Assert.Null(MachineCpu.Parse(line));

    [Fact]
    public void Since_GivesTheIntervalsBusyAndStolenShares()
    {
        var before = new MachineCpu(Busy: 100, Idle: 800, Steal: 100);
        var after = new MachineCpu(Busy: 150, Idle: 830, Steal: 120);

        (double busy, double steal) = after.Since(before) ?? throw new Xunit.Sdk.XunitException("no interval");

        Assert.Equal(50.0, busy, 6);
        Assert.Equal(20.0, steal, 6);
        Assert.Null(before.Since(before));
    }

    [Fact]
    public void Read_GivesCountersThatOnlyGrow_OnLinux_AndNothingElsewhere()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Null(MachineCpu.Read());
            return;
        }

        MachineCpu first = MachineCpu.Read() ?? throw new Xunit.Sdk.XunitException("/proc/stat not read");
        Thread.SpinWait(5_000_000);
        MachineCpu second = MachineCpu.Read() ?? throw new Xunit.Sdk.XunitException("/proc/stat not read");

        Assert.True(first.Total > 0);
        Assert.True(second.Busy >= first.Busy && second.Idle >= first.Idle && second.Steal >= first.Steal);
    }
}
