using System.Collections.Concurrent;
using System.Text;
using Loyalty.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Orleans;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>OpenTelemetry over OTLP/HTTP to a real receiver: the engine's meters and the traces of its calls.</summary>
public sealed class TelemetryTests
{
    [Fact]
    public async Task WithAnOtlpEndpoint_TheEngineExportsItsMetricsAndTraces_EventsOutIncluded()
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
        // The same receiver takes the engine's webhook deliveries.
        receiver.MapPost("/hooks", () => Results.Ok());
        await receiver.StartAsync();

        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "otel"), null,
            $"--OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{receiverPort}", "--OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            "--OTEL_METRIC_EXPORT_INTERVAL=500", "--OTEL_BSP_SCHEDULE_DELAY=200", "--Webhooks:AllowHttp=true", "--Webhooks:AllowPrivateTargets=true", "--Webhooks:PollIntervalMs=50");
        await engine.Programs.PutProgramAsync(Wire.Program("otel"));
        await new V1.Webhooks.WebhooksClient(engine.Invoker).CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = "otel", Url = $"http://127.0.0.1:{receiverPort}/hooks" });
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using Grpc.Core.AsyncServerStreamingCall<V1.Event> events = new V1.Events.EventsClient(engine.Invoker).Subscribe(
            new V1.SubscribeRequest { ProgramId = "otel" }, cancellationToken: cancel.Token);
        await events.ResponseHeadersAsync;
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = "otel", MemberId = "m1" });
        await engine.Purchases.AccrueAsync(Wire.Purchase("otel", "m1", "t-otel", 10_00));
        Assert.True(await events.ResponseStream.MoveNext(cancel.Token));

        bool metrics = false, traces = false, grainCalls = false, eventsOut = false;
        for (int i = 0; i < 100 && !(metrics && traces && grainCalls && eventsOut); i++)
        {
            await Task.Delay(100);
            metrics = Contains(received, "metrics", "loyalty.ledger.entries_committed") && Contains(received, "metrics", "dotnet.gc.pause.time");
            traces = Contains(received, "traces", "/loyalty.v1.Purchases/Accrue") || Contains(received, "traces", "loyalty.v1.Purchases/Accrue");
            grainCalls = Contains(received, "traces", "IMemberGrain");
            eventsOut = Contains(received, "metrics", "loyalty.events.streamed") && Contains(received, "metrics", "loyalty.webhooks.delivery_delay");
        }

        string got = string.Join(", ", received.Select(r => $"{r.Key}: {r.Value.Count} posts, {r.Value.Sum(b => b.Length)} bytes"));
        Assert.True(metrics, "no export of the ledger's meter and the runtime's (dotnet.gc.pause.time) reached the receiver; received " + got);
        Assert.True(traces, "no trace of the Accrue call reached the receiver");
        Assert.True(grainCalls, "no span of the member grain's call reached the receiver (grain calls carry the trace only with an endpoint)");
        Assert.Single(engine.Services.GetServices<IIncomingGrainCallFilter>());
        Assert.Single(engine.Services.GetServices<IOutgoingGrainCallFilter>());
        Assert.True(eventsOut, "no export of the events-out meter (a streamed event, a webhook delivery) reached the receiver");
    }

    [Fact]
    public async Task WithoutAnOtlpEndpoint_GrainCallsPassNoFilter_AndPurchasesAreServed()
    {
        // Empty, so that an endpoint in the machine's environment does not turn the export on.
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "no-otel"), null, "--OTEL_EXPORTER_OTLP_ENDPOINT=");
        await engine.Programs.PutProgramAsync(Wire.Program("no-otel"));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = "no-otel", MemberId = "m1" });

        V1.PurchaseAck ack = await engine.Purchases.AccrueAsync(Wire.Purchase("no-otel", "m1", "t-no-otel", 10_00));

        Assert.Equal(V1.AckStatus.Accepted, ack.Status);
        // No filter: Orleans takes its direct call path, which allocates less per call.
        Assert.Empty(engine.Services.GetServices<IIncomingGrainCallFilter>());
        Assert.Empty(engine.Services.GetServices<IOutgoingGrainCallFilter>());
    }

    private static bool Contains(ConcurrentDictionary<string, ConcurrentBag<byte[]>> received, string signal, string text) =>
        received.TryGetValue(signal, out ConcurrentBag<byte[]>? bodies) && bodies.Any(b => Encoding.UTF8.GetString(b).Contains(text, StringComparison.Ordinal));
}
