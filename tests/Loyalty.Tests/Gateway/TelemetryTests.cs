using System.Collections.Concurrent;
using System.Text;
using Loyalty.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>OpenTelemetry over OTLP/HTTP to a real receiver: the engine's meters and the traces of its calls.</summary>
public sealed class TelemetryTests
{
    [Fact]
    public async Task WithAnOtlpEndpoint_TheEngineExportsItsMetricsAndTraces()
    {
        var received = new ConcurrentDictionary<string, ConcurrentBag<byte[]>>();
        int receiverPort = Ports.Free();
        // A content root of its own: the engine's appsettings.json beside the tests would give it the engine's endpoints.
        WebApplicationBuilder receiverBuilder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = TestDatabases.TempFolder() });
        receiverBuilder.WebHost.UseUrls($"http://127.0.0.1:{receiverPort}");
        await using WebApplication receiver = receiverBuilder.Build();
        receiver.MapPost("/v1/{signal}", async (string signal, HttpRequest request) =>
        {
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body);
            received.GetOrAdd(signal, _ => []).Add(body.ToArray());
            return Results.Ok();
        });
        await receiver.StartAsync();

        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "otel"), null,
            $"--OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{receiverPort}", "--OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            "--OTEL_METRIC_EXPORT_INTERVAL=500", "--OTEL_BSP_SCHEDULE_DELAY=200");
        await engine.Programs.PutProgramAsync(Wire.Program("otel"));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = "otel", MemberId = "m1" });
        await engine.Purchases.AccrueAsync(Wire.Purchase("otel", "m1", "t-otel", 10_00));

        bool metrics = false, traces = false;
        for (int i = 0; i < 100 && !(metrics && traces); i++)
        {
            await Task.Delay(100);
            metrics = Contains(received, "metrics", "loyalty.ledger.entries_committed");
            traces = Contains(received, "traces", "/loyalty.v1.Purchases/Accrue") || Contains(received, "traces", "loyalty.v1.Purchases/Accrue");
        }

        string got = string.Join(", ", received.Select(r => $"{r.Key}: {r.Value.Count} posts, {r.Value.Sum(b => b.Length)} bytes"));
        Assert.True(metrics, "no export of the ledger's meter reached the receiver; received " + got);
        Assert.True(traces, "no trace of the Accrue call reached the receiver");
    }

    private static bool Contains(ConcurrentDictionary<string, ConcurrentBag<byte[]>> received, string signal, string text) =>
        received.TryGetValue(signal, out ConcurrentBag<byte[]>? bodies) && bodies.Any(b => Encoding.UTF8.GetString(b).Contains(text, StringComparison.Ordinal));
}
