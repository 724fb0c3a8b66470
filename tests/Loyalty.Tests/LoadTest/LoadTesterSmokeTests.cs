using System.Text.Json;
using Loyalty.LoadTest;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.LoadTest;

/// <summary>
/// A small run of the real load tester against the real engine: a POS mix with line items,
/// returns and redemptions over two streams, every balance verified. Throughput is not asserted (benchmarks are
/// not unit tests); correctness of the tool and the engine under concurrent load is.
/// </summary>
public sealed class LoadTesterSmokeTests
{
    /// <param name="batch">1: one purchase per message on Ingest; 30: IngestBatches, each stream's last batch partly full.</param>
    [Theory]
    [InlineData("1")]
    [InlineData("30")]
    public async Task LoadTester_SmallMixedRun_VerifiesEveryBalanceAndWritesBothReports(string batch)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "smoke"));
        string folder = Directory.CreateTempSubdirectory("loyalty-smoke").FullName;
        string json = Path.Combine(folder, "report.json"), html = Path.Combine(folder, "report.html");
        LoadOptions options = LoadOptions.Parse(
        [
            "--target", engine.Address, "--key", TestKeys.Operator,
            "--members", "200", "--events", "4000", "--streams", "2", "--in-flight", "128", "--batch", batch,
            "--lines", "3", "--returns", "0.1", "--redemptions", "0.1", "--duration", "60", "--quiet", "--json", json, "--html", html,
        ]);

        int exit = await new LoadRun(options).RunAsync();

        using JsonDocument report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        JsonElement root = report.RootElement;
        Assert.Equal(0, exit);
        Assert.True(root.GetProperty("verify").GetProperty("ok").GetBoolean());
        Assert.Equal((4000L, 4000L), (root.GetProperty("events_sent").GetInt64(), root.GetProperty("events_acked").GetInt64()));
        Assert.True(root.GetProperty("returns").GetProperty("acked").GetInt64() > 100);
        Assert.True(root.GetProperty("redemptions").GetProperty("accepted").GetInt64() > 100);
        Assert.True(root.GetProperty("throughput_per_s").GetDouble() > 0); // a run shorter than the warm-up still reports
        Assert.True(root.GetProperty("latency_ms").GetProperty("p99").GetDouble() > 0);
        JsonElement followUps = root.GetProperty("follow_ups");
        Assert.True(followUps.GetProperty("answered_per_s").GetDouble() > 0);
        Assert.True(followUps.GetProperty("drained_after_purchases_s").GetDouble() >= 0);
        JsonElement testerGc = root.GetProperty("tester_gc");
        Assert.True(testerGc.GetProperty("pause_ms").GetDouble() >= 0);
        Assert.True(testerGc.GetProperty("gen0").GetInt32() >= testerGc.GetProperty("gen1").GetInt32());
        Assert.Contains("<polyline", await File.ReadAllTextAsync(html), StringComparison.Ordinal);
        Assert.Equal(JsonValueKind.Null, root.GetProperty("engine_gc").ValueKind); // an engine it did not start is not watched
        Assert.Equal(JsonValueKind.Null, root.GetProperty("pacing_late_ms").ValueKind); // max mode sends without waiting
        JsonElement processCpu = root.GetProperty("process_cpu");
        Assert.True(processCpu.GetProperty("tester_us_per_purchase").GetDouble() > 0);
        Assert.Equal(JsonValueKind.Null, processCpu.GetProperty("engine_cores").ValueKind); // nor is its processor time read
        Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public async Task LoadTester_WithTheFullRules_HoldsPointsPendingWithDueTimes_AndVerifiesEveryBalance()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "smoke-full");
        await using InProcessEngine engine = await InProcessEngine.StartAsync(storage);
        string folder = Directory.CreateTempSubdirectory("loyalty-smoke").FullName;
        string json = Path.Combine(folder, "report.json");
        LoadOptions options = LoadOptions.Parse(
        [
            "--target", engine.Address, "--key", TestKeys.Operator, "--rules", "full",
            "--members", "100", "--events", "1500", "--streams", "2", "--in-flight", "64",
            "--lines", "3", "--returns", "0.1", "--duration", "60", "--quiet", "--json", json,
        ]);

        int exit = await new LoadRun(options).RunAsync();

        using JsonDocument report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        JsonElement root = report.RootElement;
        Assert.Equal(0, exit);
        Assert.True(root.GetProperty("verify").GetProperty("ok").GetBoolean()); // balance plus pending points, per member
        Assert.Equal((1500L, 1500L), (root.GetProperty("events_sent").GetInt64(), root.GetProperty("events_acked").GetInt64()));
        Assert.True(root.GetProperty("returns").GetProperty("acked").GetInt64() > 50);
        // Points pending for the return window make their members due: the plain rules write no due time.
        Assert.True(await Sql.ScalarAsync(storage, "SELECT count(*) FROM member_due") > 50);
        Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public async Task LoadTester_WithAnEngineItStarts_ReportsTheEnginesAllocationAndPauses()
    {
        string folder = Directory.CreateTempSubdirectory("loyalty-smoke").FullName;
        string json = Path.Combine(folder, "report.json");
        LoadOptions options = LoadOptions.Parse(
        [
            "--spawn", "sqlite", "--members", "300", "--events", "6000", "--streams", "2", "--warmup", "0", "--duration", "60", "--quiet", "--json", json,
        ]);

        int exit = await new LoadRun(options).RunAsync();

        using JsonDocument report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        JsonElement gc = report.RootElement.GetProperty("engine_gc");
        Assert.Equal(0, exit);
        Assert.Equal("sqlite", report.RootElement.GetProperty("engine").GetProperty("spawned").GetString());
        // Every purchase allocates in the engine (messages, tasks, the entry), so zero means the watch saw nothing.
        Assert.InRange(gc.GetProperty("allocated_bytes_per_purchase").GetInt64(), 100, 1_000_000);
        Assert.True(gc.GetProperty("allocated_mib").GetDouble() > 0);
        Assert.True(gc.GetProperty("pause_ms_max").GetDouble() <= gc.GetProperty("pause_ms_total").GetDouble());
        Assert.True(gc.GetProperty("gen0").GetInt32() >= 0 && gc.GetProperty("pauses_over_20ms").GetInt32() >= 0);
        JsonElement[] longest = [.. gc.GetProperty("longest").EnumerateArray()];
        Assert.Equal(Math.Min(50, gc.GetProperty("gen0").GetInt32() + gc.GetProperty("gen1").GetInt32() + gc.GetProperty("gen2").GetInt32()), longest.Length);
        Assert.All(longest, p => Assert.InRange(p.GetProperty("ms").GetDouble(), 0, gc.GetProperty("pause_ms_max").GetDouble()));
        // Each second's own tail: its p99 never exceeds its maximum, and some second saw answers.
        JsonElement[] seconds = [.. report.RootElement.GetProperty("timeline").EnumerateArray()];
        Assert.All(seconds, t => Assert.True(t.GetProperty("second_p99_ms").GetDouble() <= t.GetProperty("second_max_ms").GetDouble()));
        Assert.Contains(seconds, t => t.GetProperty("second_max_ms").GetDouble() > 0);
        // The machine's processor time beside it: shares of the whole, and the run kept the machine busy.
        JsonElement cpu = report.RootElement.GetProperty("machine_cpu");
        Assert.Equal(Environment.ProcessorCount, cpu.GetProperty("cores").GetInt32());
        Assert.InRange(cpu.GetProperty("busy_pct").GetDouble(), 0.1, 100);
        Assert.InRange(cpu.GetProperty("steal_pct").GetDouble(), 0, 100);
        Assert.InRange(cpu.GetProperty("steal_pct_max_second").GetDouble(), 0, 100);
        Assert.All(seconds, t => Assert.InRange(t.GetProperty("cpu_busy_pct").GetDouble() + t.GetProperty("cpu_steal_pct").GetDouble(), 0, 100.001));
        // Each process's own processor time: the engine did work for every purchase, within the machine's cores.
        JsonElement processCpu = report.RootElement.GetProperty("process_cpu");
        Assert.InRange(processCpu.GetProperty("engine_cores").GetDouble(), 0.01, Environment.ProcessorCount);
        Assert.InRange(processCpu.GetProperty("engine_us_per_purchase").GetDouble(), 1, 1_000_000);
        Assert.InRange(processCpu.GetProperty("tester_cores").GetDouble(), 0.01, Environment.ProcessorCount);
        Directory.Delete(folder, recursive: true);
    }
}
