using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Events;

/// <summary>
/// The node delivering a subscription dies by SIGKILL mid-delivery; the other node of the cluster
/// (or the engine itself, restarted) takes the subscription over when the lease runs out and
/// resumes from the saved position.
/// </summary>
public sealed class WebhookFailoverTests(ITestOutputHelper output)
{
    private const string Program = "hookfail";

    [Fact]
    public async Task TheDeliveringNodeKilledMidDelivery_HandsOver_AndEveryEventIsDeliveredInOrderPerMember()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "hookfail");
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 5, failShare: 0.1);
        // Slow enough that the kill comes mid-delivery: about ten events a second.
        receiver.Delay = TimeSpan.FromMilliseconds(200);
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 2, [.. WebhookTests.FastWebhooks, "--Webhooks:ConcurrencyPerWebhook=2"]);
        HostProcess first = cluster.Nodes[0];
        await first.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        V1.CreatedWebhook created = await new V1.Webhooks.WebhooksClient(first.Invoker).CreateWebhookAsync(
            new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url });

        List<string> expected = await EnrolAndBuyAsync(first, 12);
        await WaitForDeliveriesAsync(receiver, expected.Count / 4);

        string owner = (await Sql.RowsAsync(storage, "SELECT lease_owner FROM webhooks;", r => r.GetString(0))).Single();
        int pid = int.Parse(owner.Split('/')[1], System.Globalization.CultureInfo.InvariantCulture);
        HostProcess holder = cluster.Nodes.Single(n => n.ProcessId == pid);
        int deliveredAtKill = receiver.DeliveredEventIds().Count;
        holder.Kill();

        await receiver.WaitForAsync(expected, TimeSpan.FromSeconds(90));
        IReadOnlyList<ReceivedHook> received = receiver.Received;
        output.WriteLine($"{expected.Count} events; {deliveredAtKill} delivered when the holder was killed; {received.Count} requests in all");
        Assert.True(deliveredAtKill < expected.Count, "the holder was killed after delivering everything");
        WebhookTests.AssertSignedWith(received, created.Secret, keyVersion: 1);
        WebhookTests.AssertOneDeliveryIdPerEvent(received);
        WebhookTests.AssertInOrderPerMember(received, retriesOfDeliveredAllowed: true);
    }

    [Fact]
    public async Task ASingleEngineKilledMidDelivery_ResumesWhereItWas_AfterItsRestart()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "hookrestart");
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 6, failShare: 0.1);
        receiver.Delay = TimeSpan.FromMilliseconds(200);
        // Windows of 10 entries: the position is saved often, so "where it was" is a small window back.
        const int Window = 10;
        string[] args = [.. WebhookTests.FastWebhooks, "--Webhooks:ConcurrencyPerWebhook=2", $"--Webhooks:WindowEvents={Window}"];
        int port = Ports.Free();
        HostProcess engine = await HostProcess.StartAsync([.. EngineArgs.For(storage, port), .. args], port);
        List<string> expected;
        int deliveredAtKill;
        V1.CreatedWebhook created;
        try
        {
            await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
            created = await new V1.Webhooks.WebhooksClient(engine.Invoker).CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url });
            expected = await EnrolAndBuyAsync(engine, 8);
            // Past several saved windows, so that resuming from scratch would show.
            await WaitForDeliveriesAsync(receiver, expected.Count / 2);

            deliveredAtKill = receiver.DeliveredEventIds().Count;
            engine.Kill();
        }
        finally
        {
            await engine.DisposeAsync();
        }

        // The same database, a new process: it takes the subscription once the dead one's lease ends.
        int again = Ports.Free();
        await using HostProcess restarted = await HostProcess.StartAsync([.. EngineArgs.For(storage, again), .. args], again);
        await receiver.WaitForAsync(expected, TimeSpan.FromSeconds(90));
        IReadOnlyList<ReceivedHook> received = receiver.Received;
        output.WriteLine($"{expected.Count} events; {deliveredAtKill} delivered when the engine was killed; {received.Count} requests in all");
        Assert.True(deliveredAtKill < expected.Count, "the engine was killed after delivering everything");
        // It resumed from its saved position: at most the window in flight (up to two events an entry) was delivered twice.
        int twice = received.Count(r => r.Answered is >= 200 and < 300) - expected.Count;
        output.WriteLine($"{twice} events delivered twice");
        Assert.True(twice <= 2 * Window && twice < deliveredAtKill, $"{twice} events were delivered twice; the saved position was not where delivery stood");
        WebhookTests.AssertSignedWith(received, created.Secret, keyVersion: 1);
        WebhookTests.AssertOneDeliveryIdPerEvent(received);
        WebhookTests.AssertInOrderPerMember(received, retriesOfDeliveredAllowed: true);
    }

    /// <summary>Enrols members m0.. through the engine, four purchases each; the ids of the events their ledgers give.</summary>
    private static async Task<List<string>> EnrolAndBuyAsync(HostProcess engine, int count)
    {
        string[] members = [.. Enumerable.Range(0, count).Select(i => "m" + i)];
        foreach (string member in members)
        {
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member });
            for (int i = 0; i < 4; i++)
            {
                await engine.Purchases.AccrueAsync(Wire.Purchase(Program, member, $"p-{member}-{i}", 60_00));
            }
        }

        return await WebhookTests.EventIdsAsync(engine.Members, members, Program);
    }

    private static async Task WaitForDeliveriesAsync(WebhookReceiver receiver, int count)
    {
        DateTime until = DateTime.UtcNow.AddSeconds(60);
        while (receiver.DeliveredEventIds().Count < count)
        {
            Assert.True(DateTime.UtcNow < until, "deliveries did not start");
            await Task.Delay(20);
        }
    }
}
