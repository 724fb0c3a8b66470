using Grpc.Core;
using Grpc.Health.V1;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Gateway;

/// <summary>gRPC health checking: without a key, live and ready, and not-ready first when the node stops.</summary>
public sealed class HealthTests
{
    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Health_AnswersWithoutAKey_ServingWhenActive_AndNotReadyWhileDraining(Backend backend)
    {
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "health"), null, "--Gateway:DrainDelaySeconds=3");
        var health = new Health.HealthClient(engine.Channel);

        HealthCheckResponse.Types.ServingStatus overall = (await health.CheckAsync(new HealthCheckRequest())).Status;
        HealthCheckResponse.Types.ServingStatus ready = (await health.CheckAsync(new HealthCheckRequest { Service = "ready" })).Status;
        HealthCheckResponse.Types.ServingStatus live = (await health.CheckAsync(new HealthCheckRequest { Service = "live" })).Status;
        Task stopped = engine.StopAsync();
        HealthCheckResponse.Types.ServingStatus draining = HealthCheckResponse.Types.ServingStatus.Unknown;
        for (int i = 0; i < 40 && draining != HealthCheckResponse.Types.ServingStatus.NotServing; i++)
        {
            draining = (await health.CheckAsync(new HealthCheckRequest { Service = "ready" })).Status;
            await Task.Delay(50);
        }

        HealthCheckResponse.Types.ServingStatus liveWhileDraining = (await health.CheckAsync(new HealthCheckRequest { Service = "live" })).Status;
        await stopped;
        await engine.DisposeAsync();

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, overall);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, ready);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, live);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, draining);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, liveWhileDraining);
    }
}
