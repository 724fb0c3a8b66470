using System.Text.Json;
using Loyalty.LoadTest;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Loyalty.Tests.LoadTest;

/// <summary>
/// The load tester against a cluster of three engines, one of them killed (SIGKILL) during the run:
/// its streams move to the other targets and resend what was not answered, every balance still
/// verifies, and the report shows the failover (reconnects, and errors in the seconds it lasted).
/// </summary>
public sealed class LoadTesterFailoverTests(ITestOutputHelper output)
{
    [Fact]
    public async Task LoadTester_OverThreeTargets_RidesOutAKilledNode_AndReportsTheGapPerSecond()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "ltfailover");
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 3);
        string folder = Directory.CreateTempSubdirectory("loyalty-failover").FullName;
        string json = Path.Combine(folder, "report.json"), html = Path.Combine(folder, "report.html");
        LoadOptions options = LoadOptions.Parse(
        [
            "--target", string.Join(",", cluster.Nodes.Select(n => $"http://127.0.0.1:{n.Port}")), "--key", TestKeys.Operator,
            "--members", "300", "--events", "6000", "--streams", "3", "--mode", "rate", "--rate", "300", "--in-flight", "16",
            "--duration", "20", "--warmup", "0", "--lines", "2", "--quiet", "--json", json, "--html", html,
        ]);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        Task<int> run = new LoadRun(options).RunAsync();
        // Few slots per stream (16): the outage refuses more purchases than that, and the resends must still go out.
        // Killed once the load flows (the set-up is done and purchases are being recorded).
        while (!run.IsCompleted && clock.Elapsed < TimeSpan.FromMinutes(2)
            && await Sql.ScalarAsync(storage, "SELECT count(*) FROM ledger_entries WHERE kind = 2") < 1_000)
        {
            await Task.Delay(100);
        }

        cluster.Nodes[2].Kill();
        TimeSpan killedAt = clock.Elapsed;
        int exit = await run;
        output.WriteLine($"killed at {killedAt.TotalSeconds:F1} s, run ended at {clock.Elapsed.TotalSeconds:F1} s");
        output.WriteLine(await File.ReadAllTextAsync(json));

        using JsonDocument report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        JsonElement root = report.RootElement;
        JsonElement recovered = root.GetProperty("recovered");
        Assert.Equal(0, exit);
        Assert.True(root.GetProperty("verify").GetProperty("ok").GetBoolean());
        Assert.Equal(root.GetProperty("events_sent").GetInt64(), root.GetProperty("events_acked").GetInt64());
        Assert.True(recovered.GetProperty("reconnects").GetInt64() >= 1, "no stream moved to another target");
        Assert.True(recovered.GetProperty("resent").GetInt64() >= 1, "nothing was resent");
        Assert.Contains(root.GetProperty("timeline").EnumerateArray(), p => p.GetProperty("errors_per_s").GetDouble() > 0);
        Assert.Contains("errors/s", await File.ReadAllTextAsync(html), StringComparison.Ordinal);
        // Rate mode reports how late the tester itself woke for its send times.
        JsonElement pacing = root.GetProperty("pacing_late_ms");
        Assert.True(pacing.GetProperty("waits").GetInt64() > 0);
        Assert.InRange(pacing.GetProperty("p50").GetDouble(), 0, pacing.GetProperty("max").GetDouble());
        Directory.Delete(folder, recursive: true);
    }
}
