using System.Text.Json;
using Loyalty.LoadTest;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.LoadTest;

/// <summary>
/// The gRPC floor (a server with the engine's wire contract that answers purchases at once) runs
/// as a user starts it, through the load tester, and reports as the engine would be reported.
/// </summary>
public sealed class GrpcFloorTests
{
    [Theory]
    [InlineData(0, "max")]
    [InlineData(3, "rate")]
    public async Task TheLoadTester_AgainstTheFloor_HasEveryPurchaseAnswered_AndReportsTheFloorsAllocationAndProcessor(int hops, string mode)
    {
        string folder = Directory.CreateTempSubdirectory("loyalty-grpc-floor").FullName;
        string json = Path.Combine(folder, "report.json");
        LoadOptions options = LoadOptions.Parse(
        [
            "--spawn", "grpc-floor", "--engine-arg", $"--Floor:Hops={hops}", "--mode", mode, "--rate", "1000",
            "--members", "300", "--events", "3000", "--streams", "2", "--warmup", "0", "--duration", "60", "--quiet", "--json", json,
        ]);

        int exit = await new LoadRun(options).RunAsync();

        using JsonDocument report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        JsonElement root = report.RootElement;
        Assert.Equal(0, exit);
        // The floor answered, not the engine, with the hops asked for, under the engine's settings
        // (256 streams a connection is the engine's appsettings.json; Kestrel's own default is 100): its log says so.
        string logPath = root.GetProperty("engine").GetProperty("log").GetString()!;
        string log = await File.ReadAllTextAsync(logPath);
        Assert.Contains($"gRPC floor: answers after {hops} hops through the thread pool, at most 1024 in flight per stream, 256 streams per connection", log, StringComparison.Ordinal);
        File.Delete(logPath);
        Assert.Equal((3000L, 3000L), (root.GetProperty("events_sent").GetInt64(), root.GetProperty("events_acked").GetInt64()));
        Assert.Equal(0, root.GetProperty("verify").GetProperty("members_checked").GetInt64());
        Assert.True(root.GetProperty("latency_ms").GetProperty("p99").GetDouble() > 0);
        // The floor's own process is watched as an engine's is: every answer allocates (messages, the stream's tasks).
        Assert.InRange(root.GetProperty("engine_gc").GetProperty("allocated_bytes_per_purchase").GetInt64(), 100, 1_000_000);
        Assert.InRange(root.GetProperty("process_cpu").GetProperty("engine_cores").GetDouble(), 0.001, Environment.ProcessorCount);
        Directory.Delete(folder, recursive: true);
    }

    [Theory]
    [InlineData("--Floor:Hops=9", "Floor:Hops must be 0..8")]
    [InlineData("--Floor:Hops=-1", "Floor:Hops must be 0..8")]
    [InlineData("--Gateway:StreamInFlightMax=0", "Gateway:StreamInFlightMax must be 1 or more")]
    public async Task TheFloor_WithASettingOutOfRange_ExitsSayingWhy(string setting, string said)
    {
        (int exit, string output) = await LoadTools.RunAsync("Loyalty.GrpcFloor", [$"--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:{Ports.Free()}", setting]);

        Assert.NotEqual(0, exit);
        Assert.Contains(said, output, StringComparison.Ordinal);
    }
}
