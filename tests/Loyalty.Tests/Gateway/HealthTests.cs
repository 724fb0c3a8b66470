using Grpc.Core;
using Grpc.Health.V1;
using Loyalty.Api;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>gRPC health checking: without a key, live and ready, and not-ready first when the node stops; then the node ends its streams cleanly.</summary>
public sealed class HealthTests
{
    [Fact]
    public async Task HealthWatches_WithoutAKey_AreBoundedPerNode_AndAPlaceFreedIsTakenAgain()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "watches"));
        var health = new Health.HealthClient(engine.Channel);
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var watches = new List<AsyncServerStreamingCall<HealthCheckResponse>>();
        try
        {
            for (int i = 0; i < Loyalty.Host.Access.AnonymousStreams.OpenMax; i++)
            {
                AsyncServerStreamingCall<HealthCheckResponse> watch = health.Watch(new HealthCheckRequest(), cancellationToken: cancel.Token);
                Assert.True(await watch.ResponseStream.MoveNext(cancel.Token));
                watches.Add(watch);
            }

            using AsyncServerStreamingCall<HealthCheckResponse> beyond = health.Watch(new HealthCheckRequest(), cancellationToken: cancel.Token);
            RpcException refused = await Assert.ThrowsAsync<RpcException>(() => beyond.ResponseStream.MoveNext(cancel.Token));
            watches[0].Dispose();
            watches.RemoveAt(0);
            bool again = false;
            for (int attempt = 0; attempt < 50 && !again; attempt++)
            {
                using AsyncServerStreamingCall<HealthCheckResponse> next = health.Watch(new HealthCheckRequest(), cancellationToken: cancel.Token);
                try
                {
                    again = await next.ResponseStream.MoveNext(cancel.Token);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.ResourceExhausted)
                {
                    await Task.Delay(100);
                }
            }

            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
            Assert.Contains("without a key", refused.Status.Detail, StringComparison.Ordinal);
            Assert.True(again, "the place of a closed watch was not freed");
        }
        finally
        {
            foreach (AsyncServerStreamingCall<HealthCheckResponse> watch in watches)
            {
                watch.Dispose();
            }
        }
    }

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

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AStreamOpenWhenTheNodeStops_IsAnsweredForEverythingItTook_ThenEndsUnavailable(Backend backend)
    {
        StorageOptions storage = TestDatabases.Create(backend, "drain");
        InProcessEngine engine = await InProcessEngine.StartAsync(storage, null, "--Gateway:DrainDelaySeconds=1");
        CallInvoker invoker = engine.Channel.WithKey(TestKeys.Operator);
        await new V1.ProgramAdmin.ProgramAdminClient(invoker).PutProgramAsync(Wire.Program("drain"));
        await new V1.Members.MembersClient(invoker).EnrollAsync(new V1.EnrollRequest { ProgramId = "drain", MemberId = "m" });
        var till = new V1.Purchases.PurchasesClient(invoker);
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = till.Ingest();
        var acked = new List<string>();
        Task<RpcException?> reader = ReadUntilEndAsync(stream, acked);

        // The till keeps sending while the node stops, until the stream is closed under it.
        Task? stopped = null;
        int sent = 0;
        for (; sent < 2_000 && !reader.IsCompleted; sent++)
        {
            if (sent == 20)
            {
                stopped = engine.StopAsync();
            }

            try
            {
                await stream.RequestStream.WriteAsync(Wire.Purchase("drain", "m", $"d{sent}", 1_00));
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException)
            {
                break;
            }

            await Task.Delay(5);
        }

        RpcException? end = await reader;
        RpcException? refused = null;
        try
        {
            using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> late = till.Ingest();
            await late.RequestStream.WriteAsync(Wire.Purchase("drain", "m", "late", 1_00));
            await late.ResponseStream.MoveNext(CancellationToken.None);
        }
        catch (RpcException e)
        {
            refused = e;
        }

        await stopped!;
        await engine.DisposeAsync();
        List<string> written = await Sql.RowsAsync(storage,
            "SELECT txn_id FROM ledger_entries WHERE program_id = 'drain' AND kind = 2", r => r.GetString(0));

        Assert.Equal(StatusCode.Unavailable, end?.StatusCode);
        Assert.Contains("the node is stopping", end!.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.Unavailable, refused?.StatusCode);
        Assert.True(acked.Count >= 20, $"only {acked.Count} purchases were answered before the stop");
        Assert.True(sent < 2_000, "the stream was never ended by the stop");
        // Everything the stream took was answered, and nothing unanswered was written: the till resends exactly what it has no answer for.
        Assert.Equal(acked.Order(StringComparer.Ordinal), written.Order(StringComparer.Ordinal));
    }

    private static async Task<RpcException?> ReadUntilEndAsync(AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream, List<string> acked)
    {
        try
        {
            while (await stream.ResponseStream.MoveNext(CancellationToken.None))
            {
                Assert.Equal(V1.AckStatus.Accepted, stream.ResponseStream.Current.Status);
                acked.Add(stream.ResponseStream.Current.TransactionId);
            }

            return null;
        }
        catch (RpcException e)
        {
            return e;
        }
    }
}
