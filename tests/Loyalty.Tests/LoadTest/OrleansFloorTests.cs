using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.LoadTest;

/// <summary>The Orleans floor benchmark runs as a user would start it and reports what it measured.</summary>
public sealed class OrleansFloorTests
{
    [Fact]
    public async Task ASmallRun_ReportsLatencyCollectionsAndBytesPerCall_AndKeepsIdsAndWaitsWhenAsked()
    {
        JsonElement kept = await RunAsync("--activations", "500", "--rate", "400", "--duration", "2", "--garbage", "4096", "--keep-id", "--await-once");
        JsonElement bare = await RunAsync("--activations", "200", "--rate", "200", "--duration", "1");

        Assert.Equal(500, kept.GetProperty("activations").GetInt32());
        Assert.True(kept.GetProperty("latency_ms").GetProperty("p50").GetDouble() > 0);
        Assert.True(kept.GetProperty("latency_ms").GetProperty("max").GetDouble() >= kept.GetProperty("latency_ms").GetProperty("p99").GetDouble());
        Assert.True(kept.GetProperty("gc").GetProperty("pause_ms").GetDouble() >= 0);
        Assert.True(kept.GetProperty("kept_id").GetBoolean());
        Assert.False(bare.GetProperty("kept_id").GetBoolean());
        Assert.True(kept.GetProperty("await_once").GetBoolean());
        Assert.False(bare.GetProperty("await_once").GetBoolean());
        // Every call of the first run waited once (800 calls, and the warm-up's 500); none of the second.
        Assert.True(kept.GetProperty("waits").GetInt64() >= 800);
        Assert.Equal(0, bare.GetProperty("waits").GetInt64());
        Assert.True(kept.GetProperty("pacing_bytes_per_call").GetDouble() >= 0);

        // What a call allocates besides the garbage asked for and the pacing: Orleans' message, callback,
        // tasks and the calling state machine. Positive, and not the garbage counted in (4,096 bytes a
        // call in the first run, which also makes an id string a call).
        double keptBytes = kept.GetProperty("allocated_bytes_per_call").GetDouble();
        double bareBytes = bare.GetProperty("allocated_bytes_per_call").GetDouble();
        Assert.InRange(bareBytes, 100, 4000);
        Assert.InRange(keptBytes, 100, 4000);
    }

    [Fact]
    public async Task AnUnknownOption_FailsNamingIt()
    {
        (int exit, string output) = await StartAsync(["--activations", "10", "--frobnicate"]);

        Assert.NotEqual(0, exit);
        Assert.Contains("--frobnicate", output, StringComparison.Ordinal);
    }

    private static async Task<JsonElement> RunAsync(params string[] args)
    {
        (int exit, string output) = await StartAsync(args);
        Assert.True(exit == 0, output);
        string json = output.Split('\n').Last(l => l.StartsWith('{'));
        return JsonDocument.Parse(json).RootElement;
    }

    private static async Task<(int Exit, string Output)> StartAsync(string[] args)
    {
        // Built next to the tests in the same configuration (bin/<configuration>/<framework>).
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string dll = Path.Combine(RepoPaths.Root(), "loadtest", "Loyalty.OrleansFloor", "bin", configuration, "net10.0", "Loyalty.OrleansFloor.dll");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(dll);
        foreach (string arg in args.Concat(["--silo-port", Ports.Free().ToString(CultureInfo.InvariantCulture), "--gateway-port", Ports.Free().ToString(CultureInfo.InvariantCulture)]))
        {
            info.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(info)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        Task<string> stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout + await stderr);
    }
}
