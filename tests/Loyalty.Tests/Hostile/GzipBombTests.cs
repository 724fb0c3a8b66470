using Google.Protobuf.Reflection;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Hostile;

/// <summary>
/// Compressed messages that inflate far past the message limit, sent to every method of every
/// service of a real engine process: each is refused with RESOURCE_EXHAUSTED without being
/// inflated beyond the limit, so the engine's memory stays flat.
/// </summary>
public sealed class GzipBombTests(ITestOutputHelper output)
{
    /// <summary>What one bomb inflates to (it is about half a megabyte compressed, under every message limit).</summary>
    private const int InflatedBytes = 512 * 1024 * 1024;

    /// <summary>
    /// Resident memory the engine may gain over all the bombs: a fifth of what one bomb inflates to.
    /// The 94 refused calls themselves (message buffers up to the limit, the collector's timing) grew
    /// it by 40–51 MiB in runs on the development machine, too close to the 50 MiB this was before;
    /// one bomb inflated would add 512.
    /// </summary>
    private const double GrowthMaxMiB = 100;

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task GzipBombs_ToEveryMethod_AreResourceExhausted_AndMemoryStaysFlat(Backend backend)
    {
        int port = Ports.Free();
        await using HostProcess engine = await HostProcess.StartAsync(EngineArgs.For(TestDatabases.Create(backend, "bomb"), port), port);
        await engine.Programs.PutProgramAsync(Wire.Program("bombed"));
        byte[] bomb = GrpcFrames.Frame(GrpcFrames.GzipBomb(InflatedBytes), compressed: true);
        string address = $"http://127.0.0.1:{port}";
        using HttpClient http = GrpcFrames.Client();
        // One harmless call first, so that what the first call of a kind allocates is not counted.
        await GrpcFrames.SendAsync(http, address, "/loyalty.v1.ProgramAdmin/GetProgram", GrpcFrames.Frame([]), TestKeys.Operator);
        double before = engine.WorkingSetMiB, peak = before;

        var answers = new List<(string Method, StatusCode Code, string Message)>();
        foreach (MethodDescriptor method in RawCalls.AllMethods())
        {
            for (int round = 0; round < 2; round++)
            {
                (StatusCode code, string message) = await GrpcFrames.SendAsync(http, address, method.FullName(), bomb, TestKeys.Operator, "gzip");
                answers.Add((method.FullName(), code, message));
                peak = Math.Max(peak, engine.WorkingSetMiB);
            }
        }

        await Task.Delay(500);
        double after = engine.WorkingSetMiB;
        output.WriteLine($"{answers.Count} bombs of {bomb.Length:N0} bytes inflating to {InflatedBytes:N0}: resident {before:F0} MiB before, {peak:F0} MiB at most, {after:F0} MiB after");
        Assert.All(answers, a => Assert.True(a.Code == StatusCode.ResourceExhausted, $"{a.Method}: {a.Code} {a.Message}"));
        Assert.True(peak - before < GrowthMaxMiB, $"resident memory grew from {before:F0} to {peak:F0} MiB");
        V1.Program program = await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = "bombed" });
        Assert.Equal("bombed", program.ProgramId);
    }
}
