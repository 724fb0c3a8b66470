using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Events;

/// <summary>
/// The node delivering a subscription dies by SIGKILL mid-delivery; the other node of the cluster
/// takes the subscription over when the lease runs out and resumes from the saved position.
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

        string[] members = [.. Enumerable.Range(0, 12).Select(i => "m" + i)];
        foreach (string member in members)
        {
            await first.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member });
            for (int i = 0; i < 4; i++)
            {
                await first.Purchases.AccrueAsync(Wire.Purchase(Program, member, $"p-{member}-{i}", 60_00));
            }
        }

        List<string> expected = await WebhookTests.EventIdsAsync(first.Members, members, Program);
        DateTime until = DateTime.UtcNow.AddSeconds(60);
        while (receiver.DeliveredEventIds().Count < expected.Count / 4)
        {
            Assert.True(DateTime.UtcNow < until, "deliveries did not start");
            await Task.Delay(20);
        }

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
}
