using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Loyalty.Api;
using Loyalty.Host.Webhooks;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Events;

/// <summary>
/// Webhooks against a real HTTP receiver that fails and hangs: every event delivered at least
/// once, each member's in order, every signature valid, duplicates only as retries of one delivery id.
/// </summary>
public sealed class WebhookTests(ITestOutputHelper output)
{
    private const string Program = "hooks";
    private static readonly TimeSpan Delivery = TimeSpan.FromSeconds(90);

    /// <summary>Fast retries and a one-second timeout, so that a test sees many of them.</summary>
    internal static readonly string[] FastWebhooks =
    [
        "--Webhooks:AllowHttp=true", "--Webhooks:AllowPrivateTargets=true", "--Webhooks:TimeoutSeconds=1", "--Webhooks:RetryFirstDelayMs=20",
        "--Webhooks:RetryDelayMaxSeconds=1", "--Webhooks:PollIntervalMs=50", "--Webhooks:LeaseSeconds=3",
    ];

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task EveryEventIsDeliveredAtLeastOnce_InOrderPerMember_Signed_ThroughFailuresHangsAndStalledBodies(Backend backend)
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 17, failShare: 0.3, hangShare: 0.03, stallShare: 0.03);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "hooks"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        await EventStreamTests.EnrolAndBuyAsync(engine, ["before"], purchases: 1, prefix: "b", program: Program);
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        V1.CreatedWebhook created = await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url });

        string[] members = [.. Enumerable.Range(0, 8).Select(i => "m" + i)];
        await Task.WhenAll(members.Select(m => EventStreamTests.EnrolAndBuyAsync(engine, [m], purchases: 5, prefix: "p", program: Program)));
        List<string> expected = await EventIdsAsync(engine, members);
        await receiver.WaitForAsync(expected, Delivery);

        (IReadOnlyList<ReceivedHook> received, HashSet<int> engineDelivered) = await AsSeenByEngineAsync(hooks, created.Webhook.WebhookId, receiver);
        output.WriteLine($"{expected.Count} events, {received.Count} requests, {received.Count(r => r.Answered == 500)} answered 500, {received.Count(r => r.Answered == 0)} hung, {received.Count(r => r.Answered == -1)} stalled after their headers");
        Assert.DoesNotContain(received, r => r.MemberId == "before");
        AssertSignedWith(received, created.Secret, keyVersion: 1);
        AssertOneDeliveryIdPerEvent(received);
        AssertInOrderPerMember(received, retriesOfDeliveredAllowed: false, r => engineDelivered.Contains(r.Arrival));
        Assert.Contains(received, r => r.Answered == 500);
        Assert.Contains(received, r => r.Answered == 0);
        Assert.Contains(received, r => r.Answered == -1);

        // The log shows the failures and the successes (it is written when the worker is idle).
        var logRequest = new V1.ListWebhookDeliveriesRequest { ProgramId = Program, WebhookId = created.Webhook.WebhookId, PageSize = 500 };
        V1.ListWebhookDeliveriesResponse log = await hooks.ListWebhookDeliveriesAsync(logRequest);
        for (int i = 0; i < 100 && !log.Deliveries.Any(d => d.StatusCode == 200 && d.Attempt > 1); i++)
        {
            await Task.Delay(100);
            log = await hooks.ListWebhookDeliveriesAsync(logRequest);
        }

        Assert.Contains(log.Deliveries, d => d.StatusCode == 500 && d.Error.Contains("500", StringComparison.Ordinal));
        Assert.Contains(log.Deliveries, d => d.StatusCode == 0 && d.Error.Contains("no answer", StringComparison.Ordinal));
        Assert.Contains(log.Deliveries, d => d.StatusCode == 200 && d.Attempt > 1);
    }

    [Fact]
    public async Task AReceiverThatAnswers2xx_AndNeverEndsItsBody_HasEachEventOnce()
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 5, stallShare: 1.0);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookstall"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 2, prefix: "p", program: Program);
        List<string> expected = await EventIdsAsync(engine, ["a"]);
        for (int i = 0; i < 300 && expected.Except(receiver.Received.Select(r => r.EventId)).Any(); i++)
        {
            await Task.Delay(100);
        }

        // Three attempts' time limits (1 s here) and more: a retry would have come by now.
        await Task.Delay(TimeSpan.FromSeconds(4));

        // Before: each answer's stalled body ran out the attempt's time limit, and every event came again and again.
        Assert.Equal(expected.Order(), receiver.Received.Select(r => r.EventId).Order());
    }

    [Fact]
    public async Task ARotatedSecret_SignsBesideThePreviousOne_UntilTheGraceEnds()
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 1);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookrot"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        V1.CreatedWebhook first = await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "crm" });
        V1.CreatedWebhook rotated = await hooks.RotateWebhookSecretAsync(new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm", GraceSeconds = 3600 });

        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        await receiver.WaitForAsync(await EventIdsAsync(engine, ["a"]), Delivery);

        Assert.Equal(2, rotated.Webhook.KeyVersion);
        Assert.NotEqual(first.Secret, rotated.Secret);
        foreach (ReceivedHook hook in receiver.Received)
        {
            long timestamp = long.Parse(hook.Headers.Timestamp, System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal("2", hook.Headers.KeyVersion);
            Assert.Equal($"v2={WebhookSender.Sign(rotated.Secret, timestamp, hook.Body)},v1={WebhookSender.Sign(first.Secret, timestamp, hook.Body)}", hook.Headers.Signatures);
        }

        V1.Webhook shown = await hooks.GetWebhookAsync(new V1.WebhookRequest { ProgramId = Program, WebhookId = "crm" });
        Assert.DoesNotContain(rotated.Secret, shown.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARotationResent_FromTheVersionItLeft_AnswersTheSameSecret_AndKeepsTheFirstSigning()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookrerot"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        V1.CreatedWebhook first = await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://crm.example.com/hook", WebhookId = "crm" });
        var rotate = new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm", ExpectedKeyVersion = 1 };

        V1.CreatedWebhook rotated = await hooks.RotateWebhookSecretAsync(rotate);
        V1.CreatedWebhook resent = await hooks.RotateWebhookSecretAsync(rotate);
        RpcException stale = await Assert.ThrowsAsync<RpcException>(() => hooks.RotateWebhookSecretAsync(new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm", ExpectedKeyVersion = 5 }).ResponseAsync);
        RpcException zero = await Assert.ThrowsAsync<RpcException>(() => hooks.RotateWebhookSecretAsync(new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm", ExpectedKeyVersion = 0 }).ResponseAsync);
        V1.CreatedWebhook unconditional = await hooks.RotateWebhookSecretAsync(new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm" });

        Assert.NotEqual(first.Secret, rotated.Secret);
        Assert.Equal((2, rotated.Secret), (resent.Webhook.KeyVersion, resent.Secret));
        Assert.Equal(rotated.Webhook.PreviousSecretUntil, resent.Webhook.PreviousSecretUntil);
        Assert.Equal(StatusCode.FailedPrecondition, stale.StatusCode);
        Assert.Contains("key version 2", stale.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, zero.StatusCode);
        Assert.Contains("expected_key_version", zero.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(3, unconditional.Webhook.KeyVersion);
    }

    /// <remarks>
    /// With a receiver that also leaves half the requests without an answer (until the attempt's
    /// 1 s limit), other members' attempts are on the wire when one member's failure disables the
    /// endpoint: each is still logged (the log matches what the receiver got).
    /// </remarks>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnEndpointFailingTooLong_IsDisabledWithItsReason_AndReenablingResumesWhereItStopped(bool hanging)
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 2, failShare: hanging ? 0.5 : 1.0,
            hangShare: hanging ? 0.5 : 0, hang: TimeSpan.FromSeconds(5));
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookoff"), null,
            [.. FastWebhooks, "--Webhooks:DisableAfterFailingSeconds=2"]);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "down" });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a", "b", "c", "d"], purchases: 2, prefix: "p", program: Program);

        V1.Webhook webhook = await hooks.GetWebhookAsync(new V1.WebhookRequest { ProgramId = Program, WebhookId = "down" });
        for (int i = 0; i < 200 && webhook.Enabled; i++)
        {
            await Task.Delay(100);
            webhook = await hooks.GetWebhookAsync(new V1.WebhookRequest { ProgramId = Program, WebhookId = "down" });
        }

        Assert.False(webhook.Enabled);
        Assert.Matches(hanging ? "HTTP 500|no answer within 1 s" : "HTTP 500", webhook.DisabledReason);
        Assert.NotNull(webhook.FailingSince);
        int requestsWhenDisabled = receiver.Received.Count;
        await Task.Delay(500);
        Assert.Equal(requestsWhenDisabled, receiver.Received.Count);

        receiver.FailShare = 0;
        receiver.HangShare = 0;
        webhook = await hooks.UpdateWebhookAsync(new V1.UpdateWebhookRequest { ProgramId = Program, WebhookId = "down", Enabled = true });
        Assert.True(webhook.Enabled);
        Assert.Empty(webhook.DisabledReason);
        await receiver.WaitForAsync(await EventIdsAsync(engine, ["a", "b", "c", "d"]), Delivery);
        (IReadOnlyList<ReceivedHook> received, HashSet<int> engineDelivered) = await AsSeenByEngineAsync(hooks, "down", receiver);
        AssertInOrderPerMember(received, retriesOfDeliveredAllowed: false, r => engineDelivered.Contains(r.Arrival));
    }

    [Fact]
    public async Task AnAttemptStillWaitingWhenTheNodeStops_IsAbandonedAndLogged_WithinTheStop()
    {
        // The receiver holds the request longer than the node waits to stop (10 s), and the
        // attempt's own limit is longer still: before, the process exited with the attempt unlogged.
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 4, hangShare: 1.0, hang: TimeSpan.FromSeconds(18));
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "hookstop");
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(storage, null, [.. FastWebhooks, "--Webhooks:TimeoutSeconds=120"]))
        {
            await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
            var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
            await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "slow" });
            await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
            for (int i = 0; i < 300 && receiver.Received.Count == 0; i++)
            {
                await Task.Delay(100);
            }

            Assert.NotEmpty(receiver.Received);
            var stopping = System.Diagnostics.Stopwatch.StartNew();
            await engine.StopAsync();
            // Ten seconds of waiting, then the attempt is abandoned: the stop does not wait for its 120 s limit.
            Assert.InRange(stopping.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(40));

            // Logged by the time the stop returned, not later by a task left running.
            IReadOnlyList<WebhookAttemptRow> logged = await engine.Services.GetRequiredService<IWebhookStore>()
                .ReadAttemptsAsync(Program, "slow", long.MaxValue, 100, CancellationToken.None);
            WebhookAttemptRow row = Assert.Single(logged);
            Assert.Equal(WebhookSender.Abandoned, row.Error);
        }

        // The next node delivers the event again; answered at once, so that it stops at once.
        receiver.HangShare = 0;
        await using InProcessEngine again = await InProcessEngine.StartAsync(storage, null, [.. FastWebhooks, "--Webhooks:TimeoutSeconds=120"]);
        V1.ListWebhookDeliveriesResponse log = await new V1.Webhooks.WebhooksClient(again.Invoker)
            .ListWebhookDeliveriesAsync(new V1.ListWebhookDeliveriesRequest { ProgramId = Program, WebhookId = "slow" });
        V1.WebhookDelivery abandoned = Assert.Single(log.Deliveries, d => d.Error == WebhookSender.Abandoned);
        Assert.Equal(receiver.Received[0].DeliveryId, abandoned.DeliveryId);
        Assert.Equal(0, abandoned.StatusCode);
        Assert.False(abandoned.Manual);
    }

    [Fact]
    public async Task ARedeliveryStillWaitingWhenTheNodeStops_IsAbandonedAndLogged_WithinTheStop()
    {
        // The receiver answers the worker at once, then holds the redelivery far longer than the
        // node waits to stop; the attempt's own limit is longer still.
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 5, hang: TimeSpan.FromSeconds(100));
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "hookredostop");
        await using InProcessEngine engine = await InProcessEngine.StartAsync(storage, null, [.. FastWebhooks, "--Webhooks:TimeoutSeconds=120"]);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "crm" });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        string eventId = (await EventIdsAsync(engine, ["a"]))[^1];
        await receiver.WaitForAsync([eventId], Delivery);
        receiver.HangShare = 1.0;
        using AsyncUnaryCall<V1.WebhookDelivery> redelivery = hooks.RedeliverWebhookEventAsync(new V1.RedeliverRequest { ProgramId = Program, WebhookId = "crm", EventId = eventId });
        for (int i = 0; i < 300 && receiver.Received.Count(r => r.EventId == eventId) < 2; i++)
        {
            await Task.Delay(100);
        }

        Assert.Equal(2, receiver.Received.Count(r => r.EventId == eventId));
        var stopping = System.Diagnostics.Stopwatch.StartNew();
        await engine.StopAsync();
        TimeSpan stopped = stopping.Elapsed;

        // Logged by the time the stop returned, as abandoned and by hand; the stop did not wait for the 120 s limit.
        IReadOnlyList<WebhookAttemptRow> logged = await engine.Services.GetRequiredService<IWebhookStore>()
            .ReadAttemptsAsync(Program, "crm", long.MaxValue, 100, CancellationToken.None);
        Assert.InRange(stopped, TimeSpan.Zero, TimeSpan.FromSeconds(40));
        WebhookAttemptRow row = Assert.Single(logged, r => r.Manual);
        Assert.Equal(WebhookSender.Abandoned, row.Error);
        Assert.Equal(eventId, row.EventId);
        // The caller was answered too: the gateway still took the call's answer while it stopped.
        V1.WebhookDelivery answered = await redelivery.ResponseAsync;
        Assert.Equal(WebhookSender.Abandoned, answered.Error);
        Assert.True(answered.Manual);
    }

    [Fact]
    public async Task Redeliver_SendsOneEventAgain_WithItsDeliveryId_AndLogsItAsManual()
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 3);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookredo"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "crm", EventTypes = { "points.earned" } });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 2, prefix: "p", program: Program);
        await receiver.WaitForAsync(["a/2", "a/3"], Delivery);
        Assert.All(receiver.Received, r => Assert.Equal("points.earned", r.Type));

        V1.WebhookDelivery again = await hooks.RedeliverWebhookEventAsync(new V1.RedeliverRequest { ProgramId = Program, WebhookId = "crm", EventId = "a/2" });
        RpcException missing = await Assert.ThrowsAsync<RpcException>(() => hooks.RedeliverWebhookEventAsync(new V1.RedeliverRequest { ProgramId = Program, WebhookId = "crm", EventId = "a/99" }).ResponseAsync);

        Assert.Equal(200, again.StatusCode);
        Assert.True(again.Manual);
        ReceivedHook[] copies = [.. receiver.Received.Where(r => r.EventId == "a/2")];
        Assert.Equal(2, copies.Length);
        Assert.Single(copies.Select(c => c.DeliveryId).Distinct());
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        V1.ListWebhookDeliveriesResponse log = await hooks.ListWebhookDeliveriesAsync(new V1.ListWebhookDeliveriesRequest { ProgramId = Program, WebhookId = "crm" });
        Assert.Contains(log.Deliveries, d => d.Manual && d.EventId == "a/2" && d.StatusCode == 200);
    }

    [Fact]
    public async Task WebhookCalls_RefuseBadInputAndOtherKeys_WithAStatusNamingTheProblem()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookbad"));
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        string pos = (await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Pos, Name = "till" })).Secret;

        async Task<RpcException> Refused(Func<Task> call) => await Assert.ThrowsAsync<RpcException>(call);

        RpcException http = await Refused(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "http://127.0.0.1:9/x" }).ResponseAsync);
        RpcException relative = await Refused(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "/hooks" }).ResponseAsync);
        RpcException type = await Refused(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://crm.example/x", EventTypes = { "everything" } }).ResponseAsync);
        RpcException secretInUrl = await Refused(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://user:pw@crm.example/x" }).ResponseAsync);
        RpcException till = await Refused(() => new V1.Webhooks.WebhooksClient(engine.Channel.WithKey(pos)).ListWebhooksAsync(new V1.ListWebhooksRequest { ProgramId = Program }).ResponseAsync);
        RpcException none = await Refused(() => hooks.GetWebhookAsync(new V1.WebhookRequest { ProgramId = Program, WebhookId = "nope" }).ResponseAsync);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://crm.example/x", WebhookId = "crm" });
        RpcException twice = await Refused(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://crm.example/y", WebhookId = "crm" }).ResponseAsync);
        RpcException grace = await Refused(() => hooks.RotateWebhookSecretAsync(new V1.RotateWebhookSecretRequest { ProgramId = Program, WebhookId = "crm", GraceSeconds = 999_999_999 }).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, http.StatusCode);
        Assert.Contains("https", http.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, relative.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, type.StatusCode);
        Assert.Contains("everything", type.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, secretInUrl.StatusCode);
        Assert.Equal(StatusCode.PermissionDenied, till.StatusCode);
        Assert.Equal(StatusCode.NotFound, none.StatusCode);
        Assert.Equal(StatusCode.AlreadyExists, twice.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, grace.StatusCode);
        Assert.Single((await hooks.ListWebhooksAsync(new V1.ListWebhooksRequest { ProgramId = Program })).Webhooks);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ARetryAfterTheMemberWasErased_CarriesNoneOfTheTextTheFirstAttemptDid(Backend backend)
    {
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 3, failShare: 1.0);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "hookerase"), null, FastWebhooks);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "crm", EventTypes = { "points.adjusted" } });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = Program, MemberId = "a", Points = 5, Reason = "Jane Doe called about her order", TransactionId = "adj-1" });
        for (int i = 0; i < 200 && !receiver.Received.Any(r => r.Body.Contains("Jane", StringComparison.Ordinal)); i++)
        {
            await Task.Delay(50);
        }

        Assert.Contains(receiver.Received, r => r.Body.Contains("Jane", StringComparison.Ordinal));
        await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "a", Reason = "the member asked" });
        int before = receiver.Received.Count;
        receiver.FailShare = 0;
        for (int i = 0; i < 600 && !receiver.Received.Any(r => r.Answered == 200 && r.Type == "points.adjusted"); i++)
        {
            await Task.Delay(50);
        }

        ReceivedHook delivered = receiver.Received.Last(r => r.Answered == 200 && r.Type == "points.adjusted");
        Assert.True(delivered.Arrival >= before);
        Assert.DoesNotContain("Jane", delivered.Body, StringComparison.Ordinal);
        Assert.Matches("\"reason\": ?\"erased\"", delivered.Body);
    }

    [Fact]
    public async Task AnEndpointMovedWhileFailing_GetsTheRetriesAtOnce_NotAfterTheNextRenewal()
    {
        // Leases of 30 s: the worker renews, and used to read its subscription again, every 10 s.
        await using WebhookReceiver old = await WebhookReceiver.StartAsync(seed: 4, failShare: 1.0);
        await using WebhookReceiver moved = await WebhookReceiver.StartAsync(seed: 6);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookmove"), null,
            [.. FastWebhooks, "--Webhooks:LeaseSeconds=30"]);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = old.Url, WebhookId = "crm" });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        for (int i = 0; i < 200 && old.Received.Count < 3; i++)
        {
            await Task.Delay(20);
        }

        Assert.True(old.Received.Count >= 3, "the old endpoint failed a few attempts");
        await hooks.UpdateWebhookAsync(new V1.UpdateWebhookRequest { ProgramId = Program, WebhookId = "crm", Url = moved.Url });
        await moved.WaitForAsync(await EventIdsAsync(engine, ["a"]), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task ASubscriptionFailingForDays_GivesItsPlaceUpAtItsNextRetry_SoOneWaitingIsDelivered()
    {
        // Room for one: "w1" (claimed first) fails on every attempt and would retry within its
        // window for days; "w2" waits. After two leases (6 s here) w1 gives its place up.
        await using WebhookReceiver failing = await WebhookReceiver.StartAsync(seed: 7, failShare: 1.0);
        await using WebhookReceiver working = await WebhookReceiver.StartAsync(seed: 8);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookstuck"), null,
            [.. FastWebhooks, "--Webhooks:WorkersPerNodeMax=1"]);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = failing.Url, WebhookId = "w1" });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        for (int i = 0; i < 200 && failing.Received.Count == 0; i++)
        {
            await Task.Delay(20);
        }

        // A subscription starts at the stream's end: b's events come after it.
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = working.Url, WebhookId = "w2" });
        await EventStreamTests.EnrolAndBuyAsync(engine, ["b"], purchases: 1, prefix: "p", program: Program);
        await working.WaitForAsync(await EventIdsAsync(engine, ["b"]), TimeSpan.FromSeconds(30));
        Assert.NotEmpty(failing.Received);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task MoreSubscriptionsThanANodeHasRoomFor_TakeTurns_AndEveryOneIsDelivered(Backend backend)
    {
        // Room for two at once, five subscriptions: without turns three would never be delivered.
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 9);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "hookturns"), null,
            [.. FastWebhooks, "--Webhooks:WorkersPerNodeMax=2"]);
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        string[] webhooks = ["w1", "w2", "w3", "w4", "w5"];
        foreach (string id in webhooks)
        {
            await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = id });
        }

        await EventStreamTests.EnrolAndBuyAsync(engine, ["a", "b"], purchases: 2, prefix: "p", program: Program);
        List<string> expected = await EventIdsAsync(engine, ["a", "b"]);
        HashSet<string> Missing() => [.. webhooks.SelectMany(w => expected.Select(e => WebhookSender.DeliveryIdOf(w, e)))
            .Except(receiver.Received.Where(r => r.Answered is >= 200 and < 300).Select(r => r.DeliveryId))];
        for (int i = 0; i < 600 && Missing().Count > 0; i++)
        {
            await Task.Delay(100);
        }

        Assert.Empty(Missing());
        AssertInOrderPerMember([.. receiver.Received.Where(r => r.DeliveryId.StartsWith("w3/", StringComparison.Ordinal))], retriesOfDeliveredAllowed: true);
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080/hook", "127.0.0.1")]
    [InlineData("http://localhost:8080/hook", "'localhost' is this machine")]
    [InlineData("http://crm.localhost/hook", "'crm.localhost' is this machine")]
    [InlineData("http://169.254.169.254/latest/meta-data", "169.254.169.254")]
    [InlineData("https://10.1.2.3/hook", "10.1.2.3")]
    [InlineData("https://[::1]/hook", "::1")]
    [InlineData("https://[::ffff:192.168.0.7]/hook", "192.168.0.7")]
    [InlineData("https://[fd00::7]/hook", "fd00::7")]
    public async Task AWebhookToAnInternalAddress_IsRefused_UnlessPrivateTargetsAreAllowed(string url, string named)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "hookssrf"), null, "--Webhooks:AllowHttp=true");
        await engine.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = "https://crm.example/x", WebhookId = "crm" });

        RpcException created = await Assert.ThrowsAsync<RpcException>(() => hooks.CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = url }).ResponseAsync);
        RpcException moved = await Assert.ThrowsAsync<RpcException>(() => hooks.UpdateWebhookAsync(new V1.UpdateWebhookRequest { ProgramId = Program, WebhookId = "crm", Url = url }).ResponseAsync);

        Assert.Equal((StatusCode.InvalidArgument, StatusCode.InvalidArgument), (created.StatusCode, moved.StatusCode));
        Assert.Contains(named, created.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("Webhooks:AllowPrivateTargets", created.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("https://crm.example/x", Assert.Single((await hooks.ListWebhooksAsync(new V1.ListWebhooksRequest { ProgramId = Program })).Webhooks).Url);
    }

    [Fact]
    public async Task ADeliveryToAnInternalAddress_IsNotConnected_WhenPrivateTargetsAreTurnedOff_AndTheLogSaysWhy()
    {
        // A subscription made while private targets were allowed, on a node that no longer allows them:
        // the check on the connection's addresses (also what stops a public name resolving inward) refuses it.
        await using WebhookReceiver receiver = await WebhookReceiver.StartAsync(seed: 5);
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "hookinward");
        await using (InProcessEngine allowing = await InProcessEngine.StartAsync(storage, null, FastWebhooks))
        {
            await allowing.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
            await new V1.Webhooks.WebhooksClient(allowing.Invoker).CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = Program, Url = receiver.Url, WebhookId = "inward" });
        }

        await using InProcessEngine engine = await InProcessEngine.StartAsync(storage, null, [.. FastWebhooks, "--Webhooks:AllowPrivateTargets=false"]);
        var hooks = new V1.Webhooks.WebhooksClient(engine.Invoker);
        await EventStreamTests.EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "p", program: Program);
        var logRequest = new V1.ListWebhookDeliveriesRequest { ProgramId = Program, WebhookId = "inward", PageSize = 50 };
        V1.ListWebhookDeliveriesResponse log = await hooks.ListWebhookDeliveriesAsync(logRequest);
        for (int i = 0; i < 200 && log.Deliveries.Count == 0; i++)
        {
            await Task.Delay(50);
            log = await hooks.ListWebhookDeliveriesAsync(logRequest);
        }

        Assert.NotEmpty(log.Deliveries);
        Assert.All(log.Deliveries, d => Assert.Contains("not on the public internet", d.Error, StringComparison.Ordinal));
        Assert.Empty(receiver.Received);
    }

    [Fact]
    public void TheLimitsAddedForSharedNodes_RefuseValuesOutOfRange_NamingTheSetting()
    {
        Assert.Equal("Webhooks:WorkersPerNodeMax must be 1..1024", new WebhookOptions { WorkersPerNodeMax = 0 }.Problem());
        Assert.Equal("Webhooks:WorkersPerNodeMax must be 1..1024", new WebhookOptions { WorkersPerNodeMax = 1_025 }.Problem());
        Assert.Equal("Events:SubscribersPerProgramMax must be 1..100000", new Loyalty.Host.Events.EventOptions { SubscribersPerProgramMax = 0 }.Problem());
        Assert.Equal("Reports:ConcurrentPerProgramMax must be 1..1000", new Loyalty.Host.Reports.ReportOptions { ConcurrentPerProgramMax = 0 }.Problem());
        Assert.Null(new WebhookOptions { WorkersPerNodeMax = 1_024 }.Problem());
        Assert.Null(new Loyalty.Host.Reports.ReportOptions { ConcurrentPerProgramMax = 1_000 }.Problem());
        Assert.Equal(TimeSpan.FromMinutes(1), new WebhookOptions().TurnAfter);
    }

    [Theory]
    [InlineData("127.0.0.1", true)]
    [InlineData("10.255.0.1", true)]
    [InlineData("172.16.0.1", true)]
    [InlineData("172.32.0.1", false)]
    [InlineData("192.168.1.1", true)]
    [InlineData("169.254.169.254", true)]
    [InlineData("100.64.0.1", true)]
    [InlineData("100.128.0.1", false)]
    [InlineData("0.0.0.0", true)]
    [InlineData("224.0.0.1", true)]
    [InlineData("255.255.255.255", true)]
    [InlineData("8.8.8.8", false)]
    [InlineData("93.184.216.34", false)]
    [InlineData("::1", true)]
    [InlineData("::", true)]
    [InlineData("fe80::1", true)]
    [InlineData("fc00::1", true)]
    [InlineData("ff02::1", true)]
    [InlineData("::ffff:127.0.0.1", true)]
    [InlineData("::ffff:8.8.8.8", false)]
    [InlineData("64:ff9b::a00:1", true)]
    [InlineData("64:ff9b::808:808", false)]
    [InlineData("2001:db8::1", true)]
    [InlineData("2606:4700::1111", false)]
    [InlineData("2002:7f00:1::1", true)]         // 6to4 of 127.0.0.1
    [InlineData("2002:a9fe:a9fe::1", true)]      // 6to4 of 169.254.169.254
    [InlineData("2002:808:808::1", false)]       // 6to4 of 8.8.8.8
    [InlineData("2001:0:4136:e378:8000:63bf:3fff:fdd2", true)] // Teredo
    [InlineData("2001:2::1", true)]              // benchmarking
    [InlineData("64:ff9b:1::a00:1", true)]       // local-use NAT64
    [InlineData("100::1", true)]                 // discard-only
    [InlineData("3fff::1", true)]                // documentation
    [InlineData("2001:4860:4860::8888", false)]
    public void InternalAddresses_AreThoseOutsideThePublicInternet(string address, bool isInternal) =>
        Assert.Equal(isInternal, WebhookTargets.IsInternal(System.Net.IPAddress.Parse(address)));

    /// <summary>The ids of every event the members' ledgers give.</summary>
    internal static async Task<List<string>> EventIdsAsync(InProcessEngine engine, IEnumerable<string> members, string program = Program) =>
        await EventIdsAsync(engine.Members, members, program);

    internal static async Task<List<string>> EventIdsAsync(V1.Members.MembersClient client, IEnumerable<string> members, string program = Program)
    {
        var ids = new List<string>();
        foreach (string member in members)
        {
            V1.ListLedgerResponse ledger = await client.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = program, MemberId = member, PageSize = 500 });
            foreach (V1.LedgerEntry e in ledger.Entries)
            {
                ids.Add($"{member}/{e.Sequence}");
                if (e.Breakdown is { } b && b.TierAfter.Length > 0 && (b.DowngradedFrom.Length > 0 ? b.DowngradedFrom : b.TierBefore) != b.TierAfter)
                {
                    ids.Add($"{member}/{e.Sequence}/1");
                }
            }
        }

        return ids;
    }

    internal static void AssertSignedWith(IEnumerable<ReceivedHook> received, string secret, int keyVersion)
    {
        foreach (ReceivedHook hook in received)
        {
            long timestamp = long.Parse(hook.Headers.Timestamp, System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal($"v{keyVersion}={WebhookSender.Sign(secret, timestamp, hook.Body)}", hook.Headers.Signatures);
        }
    }

    internal static void AssertOneDeliveryIdPerEvent(IEnumerable<ReceivedHook> received)
    {
        foreach (IGrouping<string, ReceivedHook> e in received.GroupBy(r => r.EventId))
        {
            Assert.Single(e.Select(r => r.DeliveryId).Distinct());
        }
    }

    /// <summary>
    /// The requests the receiver got, once the engine's delivery log accounts for every one of
    /// them, and the arrivals the engine saw delivered. The two can differ: a 200 the receiver
    /// sent after the engine's time limit ran out is a failed attempt to the engine, rightly
    /// retried. A request is matched to the log by event, in order (one event's attempts never
    /// overlap on one node).
    /// </summary>
    internal static async Task<(IReadOnlyList<ReceivedHook> Received, HashSet<int> Delivered)> AsSeenByEngineAsync(
        V1.Webhooks.WebhooksClient hooks, string webhookId, WebhookReceiver receiver, string program = Program)
    {
        var request = new V1.ListWebhookDeliveriesRequest { ProgramId = program, WebhookId = webhookId, PageSize = 500 };
        DateTime until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            IReadOnlyList<ReceivedHook> received = receiver.Received;
            V1.WebhookDelivery[] log = [.. (await hooks.ListWebhookDeliveriesAsync(request)).Deliveries.Where(d => !d.Manual).Reverse()];
            Dictionary<string, Queue<V1.WebhookDelivery>> byEvent = log.GroupBy(d => d.EventId).ToDictionary(g => g.Key, g => new Queue<V1.WebhookDelivery>(g));
            bool settled = log.Length == received.Count && received.All(r => byEvent.ContainsKey(r.EventId))
                && byEvent.Values.All(attempts => attempts.Last().StatusCode is >= 200 and < 300);
            if (settled)
            {
                var delivered = new HashSet<int>();
                foreach (ReceivedHook hook in received)
                {
                    V1.WebhookDelivery attempt = byEvent[hook.EventId].Dequeue();
                    if (attempt.StatusCode is >= 200 and < 300 && attempt.Error.Length == 0)
                    {
                        delivered.Add(hook.Arrival);
                    }
                }

                return (received, delivered);
            }

            Assert.True(DateTime.UtcNow < until, $"the engine's log has {log.Length} attempts, the receiver {received.Count} requests");
            await Task.Delay(100);
        }
    }

    /// <summary>
    /// Per member, an event is first sent only after every earlier event of that member was
    /// delivered. With <paramref name="retriesOfDeliveredAllowed"/> (a node died mid-window), an
    /// event already delivered may come again; without it, only failed attempts are repeated.
    /// Whether a request was delivered is the receiver's answer unless <paramref name="delivered"/> says.
    /// </summary>
    internal static void AssertInOrderPerMember(IEnumerable<ReceivedHook> received, bool retriesOfDeliveredAllowed, Func<ReceivedHook, bool>? delivered = null)
    {
        delivered ??= r => r.Answered is >= 200 and < 300;
        foreach (IGrouping<string, ReceivedHook> member in received.GroupBy(r => r.MemberId))
        {
            var done = new HashSet<string>();
            string? pending = null;
            var firstSent = new List<(long Sequence, string EventId)>();
            foreach (ReceivedHook hook in member.OrderBy(r => r.Arrival))
            {
                if (done.Contains(hook.EventId))
                {
                    Assert.True(retriesOfDeliveredAllowed, $"{hook.EventId} was sent again after it was delivered");
                }
                else
                {
                    Assert.True(pending is null || pending == hook.EventId, $"{hook.EventId} was sent while {pending} of the same member was not yet delivered");
                    if (pending is null)
                    {
                        firstSent.Add((hook.Sequence, hook.EventId));
                    }

                    pending = delivered(hook) ? null : hook.EventId;
                    if (pending is null)
                    {
                        done.Add(hook.EventId);
                    }
                }
            }

            Assert.Equal(firstSent.OrderBy(f => f.Sequence).ThenBy(f => f.EventId, StringComparer.Ordinal).Select(f => f.EventId), firstSent.Select(f => f.EventId));
        }
    }
}
