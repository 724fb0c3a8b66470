using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Api;
using Loyalty.Host.Grpc;
using Microsoft.Extensions.DependencyInjection;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Hostile;

/// <summary>What a hostile or broken client gets: a clear status, nothing written, nothing echoed whole.</summary>
public sealed class HostileInputTests
{
    private const string Program = "hostile";

    [Fact]
    public async Task MessagesThatDoNotParse_AreInvalidArgument_OnUnaryCallsAndStreams()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using HttpClient http = GrpcFrames.Client();
        byte[] garbage = GrpcFrames.Frame([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);

        (StatusCode Code, string Message)[] answers =
        [
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/Enroll", garbage, TestKeys.Operator),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", garbage, TestKeys.Operator),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Ingest", garbage, TestKeys.Operator),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/IngestBatches", garbage, TestKeys.Operator),
        ];

        Assert.All(answers, a => Assert.Equal(StatusCode.InvalidArgument, a.Code));
        Assert.All(answers, a => Assert.Contains("is not a valid", a.Message, StringComparison.Ordinal));
    }

    [Fact]
    public async Task CallsWithoutAValidKey_AreRefusedBeforeTheirMessageIsRead()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using HttpClient http = GrpcFrames.Client();
        byte[] garbage = GrpcFrames.Frame([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        // 4 MiB of empty line items (field 8, length 0), gzipped to a few kilobytes: parsed, two million objects.
        byte[] lines = new byte[4 * 1024 * 1024 - 16];
        for (int i = 0; i < lines.Length; i += 2)
        {
            lines[i] = 0x42;
        }

        byte[] bomb = GrpcFrames.Frame(Gzip(lines), compressed: true);

        (StatusCode Code, string Message)[] answers =
        [
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/Enroll", garbage, key: null),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", garbage, key: "lk_nope.secret"),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", bomb, key: null, encoding: "gzip"),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Ingest", garbage, key: null),
            await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/GetMember", garbage, key: TestKeys.Operator,
                headers: [("authorization", "Bearer " + TestKeys.Operator)]),
        ];

        // Not INVALID_ARGUMENT (the message parsed and found broken) nor RESOURCE_EXHAUSTED: never read.
        Assert.All(answers, a => Assert.Equal(StatusCode.Unauthenticated, a.Code));
        Assert.Contains("authorization: Bearer", answers[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MessagesOfEmptyParts_WithinTheByteLimit_AreRefusedBeforeTheyBecomeObjects()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using HttpClient http = GrpcFrames.Client();
        // A batch of 1,000 purchases of 2,000 empty line items each (4 MiB, gzipped to kilobytes):
        // parsed, two million objects before any count is looked at.
        var purchase = new List<byte> { 0x0A, 0xA0, 0x1F };   // field 1, length 4,000
        for (int i = 0; i < 2_000; i++)
        {
            purchase.AddRange([0x42, 0x00]);
        }

        byte[] batch = [.. Enumerable.Repeat(purchase, 1_000).SelectMany(p => p)];
        // An Accrue of 250,000 empty line items (500,000 bytes, under its 512 KiB).
        byte[] lines = [.. Enumerable.Repeat<byte[]>([0x42, 0x00], 250_000).SelectMany(l => l)];
        byte[] batchFrame = GrpcFrames.Frame(Gzip(batch), compressed: true), linesFrame = GrpcFrames.Frame(Gzip(lines), compressed: true);
        await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", GrpcFrames.Frame(Wire.Purchase(Program, "m1", "warm", 1_00).ToByteArray()), TestKeys.Operator);

        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        (StatusCode Code, string Message) batched = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/IngestBatches", batchFrame, TestKeys.Operator, encoding: "gzip");
        (StatusCode Code, string Message) accrued = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", linesFrame, TestKeys.Operator, encoding: "gzip");
        // The batch behind an empty group, which the parser reads and a walk that gave up on it would not count.
        (StatusCode Code, string Message) grouped = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/IngestBatches",
            GrpcFrames.Frame(Gzip([0x7B, 0x7C, .. batch]), compressed: true), TestKeys.Operator, encoding: "gzip");
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;

        Assert.Equal((StatusCode.ResourceExhausted, StatusCode.ResourceExhausted, StatusCode.InvalidArgument), (batched.Code, accrued.Code, grouped.Code));
        Assert.Contains("embedded messages", batched.Message, StringComparison.Ordinal);
        // Before: about 350 MB for the batch. The inflated bytes themselves are most of what is left.
        Assert.True(allocated < 64L * 1024 * 1024, $"{allocated:N0} bytes allocated");
    }

    [Fact]
    public async Task ABatchStreamWhoseAnswersAreNotRead_HoldsABoundedNumberOfThem_AndIsNoLongerRead()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        V1.CreatedKey key = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = Program, Scope = V1.KeyScope.Pos, Name = "store 1 tills", StoreIds = { "store-1" },
        });
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(key.Secret));
        Loyalty.Host.ClientFaults faults = engine.Services.GetRequiredService<Loyalty.Host.ClientFaults>();
        long faultsBefore = faults.Total;
        // Each purchase is for a store the key may not use: refused at once, at no cost to its quota.
        var batch = new V1.PurchaseBatch();
        batch.Purchases.AddRange(Enumerable.Range(0, Limits.IngestBatchPurchasesMax).Select(i =>
        {
            V1.Purchase purchase = Wire.Purchase(Program, "m1", $"t{i}", 1_00);
            purchase.StoreId = "store-2";
            return purchase;
        }));

        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> call = till.IngestBatches(cancellationToken: cancel.Token);
        Task sending = Task.Run(async () =>
        {
            for (int i = 0; i < 70; i++)
            {
                await call.RequestStream.WriteAsync(batch, cancel.Token);
            }
        });
        await Task.WhenAny(sending, Task.Delay(TimeSpan.FromSeconds(5)));
        long refused = faults.Total - faultsBefore;
        await cancel.CancelAsync();

        // Answers never read: the gateway holds at most StreamAnswersPendingMax of them (and what the
        // connection's window took), then stops reading. Before: 64 batches queued, 64,000 and more.
        Assert.InRange(refused, Limits.IngestBatchPurchasesMax, 4 * Limits.IngestBatchPurchasesMax);
    }

    [Fact]
    public async Task HeadersThatAreNotGrpcMetadata_DoNotFailTheCall()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using HttpClient http = GrpcFrames.Client();
        byte[] get = GrpcFrames.Frame(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m1" }.ToByteArray());
        (string, string)[] odd = [("x-odd-bin", "a"), ("x!odd", "1")];
        using var json = new HttpClient { BaseAddress = new Uri(engine.HttpAddress) };
        using var jsonRequest = new HttpRequestMessage(HttpMethod.Get, $"/v1/programs/{Program}/members/m1");
        jsonRequest.Headers.TryAddWithoutValidation("authorization", "Bearer " + TestKeys.Operator);
        jsonRequest.Headers.TryAddWithoutValidation("x-odd-bin", "a");

        (StatusCode Code, string Message) keyed = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/GetMember", get, TestKeys.Operator, headers: odd);
        (StatusCode Code, string Message) unkeyed = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/GetMember", get, key: null, headers: odd);
        using HttpResponseMessage jsonAnswer = await json.SendAsync(jsonRequest);

        // Before: UNKNOWN, with an error and its stack trace logged, key or no key.
        Assert.Equal(StatusCode.OK, keyed.Code);
        Assert.Equal(StatusCode.Unauthenticated, unkeyed.Code);
        Assert.Equal(System.Net.HttpStatusCode.OK, jsonAnswer.StatusCode);
    }

    [Fact]
    public async Task APurchaseCallsMessage_OverWhatOnePurchaseNeeds_IsResourceExhausted_AndWritesNothing()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        V1.Purchase purchase = Wire.Purchase(Program, "m1", "t-lines", 10_00);
        purchase.LineItems.Add(Enumerable.Range(0, 300_000).Select(_ => new V1.LineItem()));
        using HttpClient http = GrpcFrames.Client();

        (StatusCode Code, string Message) accrue = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue",
            GrpcFrames.Frame(purchase.ToByteArray()), TestKeys.Operator);
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m1" });

        Assert.Equal(StatusCode.ResourceExhausted, accrue.Code);
        Assert.Contains($"takes at most {512 * 1024}", accrue.Message, StringComparison.Ordinal);
        Assert.Equal(0, member.Balance);
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("application/grpc+json")]   // before: taken for gRPC, and Kestrel's 28.6 MiB limit applied
    public async Task AJsonBody_OverItsLimit_IsRefused_AndWritesNothing(string contentType)
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using var json = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(30) };
        json.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", TestKeys.Operator);
        string body = "{\"memberId\":\"big\",\"referredBy\":\"" + new string('a', 5 * 1024 * 1024) + "\"}";

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/programs/{Program}/members")
        {
            Content = new StringContent(body, System.Text.Encoding.UTF8, contentType),
        };
        // The body goes only once the server asks for it; refused first, it is never sent.
        request.Headers.ExpectContinue = true;
        using HttpResponseMessage answer = await json.SendAsync(request);
        RpcException missing = await Assert.ThrowsAsync<RpcException>(() =>
            engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "big" }).ResponseAsync);

        // Refused from its declared length, as a message over its limit is on gRPC (RESOURCE_EXHAUSTED).
        // Before the body was read ahead of JSON transcoding: INVALID_ARGUMENT (HTTP 400), Kestrel's words.
        Assert.Equal(System.Net.HttpStatusCode.RequestEntityTooLarge, answer.StatusCode);
        Assert.Contains("the request body is larger than 4194304 bytes", await answer.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task AJsonBody_InACharsetOtherThanUtf8_IsInvalidArgument_NamingIt_AndCountedAsTheClientsFault()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        using var json = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(30) };
        json.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", TestKeys.Operator);
        Loyalty.Host.ClientFaults faults = engine.Services.GetRequiredService<Loyalty.Host.ClientFaults>();
        long faultsBefore = faults.Total;

        var answers = new List<(System.Net.HttpStatusCode Status, string Body)>();
        foreach (string charset in (string[])["bogus", "utf-16", new string('x', 5_000)])
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/programs/{Program}/members")
            {
                Content = new ByteArrayContent("{\"memberId\":\"cs\"}"u8.ToArray()),
            };
            request.Content.Headers.TryAddWithoutValidation("Content-Type", $"application/json; charset={charset}");
            using HttpResponseMessage answer = await json.SendAsync(request);
            answers.Add((answer.StatusCode, await answer.Content.ReadAsStringAsync()));
        }

        RpcException missing = await Assert.ThrowsAsync<RpcException>(() =>
            engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "cs" }).ResponseAsync);

        // Before: HTTP 500, {"code":2,"message":"Exception was thrown by handler."}, and an error logged with its stack trace.
        Assert.All(answers, a => Assert.Equal(System.Net.HttpStatusCode.BadRequest, a.Status));
        Assert.All(answers, a => Assert.Contains("\"code\":3", a.Body, StringComparison.Ordinal));
        Assert.Contains("charset 'bogus' is not supported", answers[0].Body, StringComparison.Ordinal);
        Assert.True(answers[2].Body.Length < 2_000, $"the refusal echoes {answers[2].Body.Length} characters");
        Assert.Equal(3, faults.Total - faultsBefore);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
    }

    private static byte[] Gzip(byte[] data)
    {
        using var output = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(output, System.IO.Compression.CompressionLevel.SmallestSize, leaveOpen: true))
        {
            gzip.Write(data);
        }

        return output.ToArray();
    }

    [Fact]
    public async Task HugeFields_AreRefusedByLength_WithShortMessages_AndTheConnectionGoesOn()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        V1.PutProgramRequest program = Wire.Program("tz");
        program.Settings.TimeZone = new string('Z', 65 * 1024);
        V1.Purchase purchase = Wire.Purchase(Program, new string('m', 100_000), "t-huge", 10_00);

        RpcException tz = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(program, deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync);
        RpcException member = await Assert.ThrowsAsync<RpcException>(() => engine.Purchases.AccrueAsync(purchase, deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync);
        V1.Program next = await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = Program }, deadline: DateTime.UtcNow.AddSeconds(10));

        Assert.Equal((StatusCode.InvalidArgument, "time_zone is longer than 64 characters"), (tz.StatusCode, tz.Status.Detail));
        Assert.Equal(StatusCode.InvalidArgument, member.StatusCode);
        Assert.True(member.Status.Detail.Length < 200, Bounded.Echo(member.Status.Detail));
        Assert.Equal(Program, next.ProgramId);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task PurchasesAndReturns_DatedTooLongAgo_AreInvalidArgument_AndWriteNothing(Backend backend)
    {
        await using InProcessEngine engine = await StartAsync(backend);
        V1.PutProgramRequest strict = Wire.Program("strict");
        strict.Settings.MaxBackdateDays = 30;
        await engine.Programs.PutProgramAsync(strict);
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = "strict", MemberId = "m1" });
        DateTimeOffset now = DateTimeOffset.UtcNow;
        V1.Purchase Dated(string txn, Timestamp at)
        {
            V1.Purchase p = Wire.Purchase("strict", "m1", txn, 10_00);
            p.OccurredAt = at;
            return p;
        }

        RpcException epoch = await RefusedAsync(engine.Purchases.AccrueAsync(Dated("t-1970", Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch))).ResponseAsync);
        RpcException year1 = await RefusedAsync(engine.Purchases.AccrueAsync(Dated("t-0001", new Timestamp { Seconds = -62135596800 })).ResponseAsync);
        RpcException y1999 = await RefusedAsync(engine.Purchases.AccrueAsync(Dated("t-1999", Timestamp.FromDateTimeOffset(new DateTimeOffset(1999, 12, 31, 0, 0, 0, TimeSpan.Zero)))).ResponseAsync);
        RpcException old = await RefusedAsync(engine.Purchases.AccrueAsync(Dated("t-old", Timestamp.FromDateTimeOffset(now.AddDays(-31)))).ResponseAsync);
        V1.PurchaseAck recent = await engine.Purchases.AccrueAsync(Dated("t-recent", Timestamp.FromDateTimeOffset(now.AddDays(-29))));
        RpcException oldReturn = await RefusedAsync(engine.Purchases.ReturnAsync(new V1.ReturnRequest
        {
            ProgramId = "strict", MemberId = "m1", TransactionId = "r-old", OriginalTransactionId = "t-recent", StoreId = "store-1",
            AmountMinor = 1_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(now.AddDays(-31)),
        }).ResponseAsync);
        V1.PutProgramRequest tooLax = Wire.Program("lax");
        tooLax.Settings.MaxBackdateDays = 5_000;
        RpcException lax = await RefusedAsync(engine.Programs.PutProgramAsync(tooLax).ResponseAsync);

        Assert.Equal("occurred_at is before 2000-01-01", epoch.Status.Detail);
        Assert.Equal("occurred_at is required", year1.Status.Detail);
        Assert.Equal("occurred_at is before 2000-01-01", y1999.Status.Detail);
        Assert.Equal("occurred_at is more than 30 days in the past (the program's max_backdate_days)", old.Status.Detail);
        Assert.Equal("occurred_at is more than 30 days in the past (the program's max_backdate_days)", oldReturn.Status.Detail);
        Assert.Equal("max_backdate_days must be 1..3650", lax.Status.Detail);
        Assert.Equal(V1.AckStatus.Accepted, recent.Status);
        Assert.Equal(1, await Sql.ScalarAsync(engine.Storage, "SELECT count(*) FROM ledger_entries WHERE program_id = 'strict' AND kind IN (2, 4)"));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ControlCharactersInFreeText_AreInvalidArgument_AndOtherMembersCommitAsUsual(Backend backend)
    {
        await using InProcessEngine engine = await StartAsync(backend);
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m2" });
        V1.PutProgramRequest named = Wire.Program("named");
        named.Settings.Name = "shop\0";

        Task<V1.PurchaseAck> neighbour = engine.Purchases.AccrueAsync(Wire.Purchase(Program, "m2", "t-neighbour", 10_00)).ResponseAsync;
        RpcException reason = await Assert.ThrowsAsync<RpcException>(() => engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest
        {
            ProgramId = Program, MemberId = "m1", TransactionId = "adj-nul", Points = 5, Reason = "ticket\0 42",
        }).ResponseAsync);
        RpcException profile = await Assert.ThrowsAsync<RpcException>(() => engine.Members.SetProfileAsync(new V1.SetProfileRequest
        {
            ProgramId = Program, MemberId = "m1", Fields = { ["name"] = "Ann\u0007" },
        }).ResponseAsync);
        RpcException program = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(named).ResponseAsync);

        Assert.Equal((StatusCode.InvalidArgument, "reason may not contain control characters"), (reason.StatusCode, reason.Status.Detail));
        Assert.Equal((StatusCode.InvalidArgument, "profile field 'name' may not contain control characters"), (profile.StatusCode, profile.Status.Detail));
        Assert.Equal((StatusCode.InvalidArgument, "name may not contain control characters"), (program.StatusCode, program.Status.Detail));
        Assert.Equal(V1.AckStatus.Accepted, (await neighbour).Status);
        Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'm1' AND kind <> 1"));
    }

    [Fact]
    public void SettingsStoredBeforeTheBackdateLimit_UseTheDefault_NotZeroDays()
    {
        // Orleans leaves a field a stored program did not have at 0.
        var stored = new ProgramSettings("old", "USD", 2, 1, MaxBackdateDays: 0);
        DateTimeOffset now = DateTimeOffset.UtcNow;

        Assert.Null(stored.RefusesBackdated(now.AddDays(-10), now));
        Assert.NotNull(stored.RefusesBackdated(now.AddDays(-ProgramSettings.MaxBackdateDaysDefault - 1), now));
    }

    [Fact]
    public async Task SilentStream_IsEndedAfterTheIdleLimit_WithDeadlineExceeded()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite, "--Gateway:StreamIdleTimeoutSeconds=1");
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = engine.Purchases.Ingest();
        await stream.RequestStream.WriteAsync(Wire.Purchase(Program, "m1", "t-idle", 10_00));
        Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));

        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));

        Assert.Equal(StatusCode.DeadlineExceeded, ended.StatusCode);
        Assert.Contains("no message for 1 s", ended.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ABatchStream_WhoseClientStopsReadingItsAnswers_IsEndedAfterTheIdleLimit_AfterItsLastBatch()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite, "--Gateway:StreamIdleTimeoutSeconds=1");
        V1.CreatedKey pos = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Pos, Name = "till" });
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos.Secret));
        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> stream = till.IngestBatches();
        // Refused at the door (another program): answered at once, about 2 MB of answers, far over
        // what HTTP/2 lets the server send to a client that does not read. The server stops
        // reading once StreamAnswersPendingMax answers wait, and ends the stream after the idle
        // limit: the writes after that fail, the stream being reset.
        try
        {
            for (int b = 0; b < 20; b++)
            {
                var batch = new V1.PurchaseBatch();
                batch.Purchases.Add(Enumerable.Range(0, 1_000).Select(i => Wire.Purchase("elsewhere", "m1", $"t-{b}-{i}", 10_00)));
                await stream.RequestStream.WriteAsync(batch);
            }

            await stream.RequestStream.CompleteAsync();
        }
        catch (Exception e) when (e is HttpProtocolException or RpcException or IOException or InvalidOperationException)
        {
            // Ended by the server while the client was still sending.
        }

        // Before, the stream waited for as long as the client: it never ended on the server.
        OpenStreams open = engine.Services.GetRequiredService<OpenStreams>();
        for (var until = DateTime.UtcNow.AddSeconds(30); open.Count > 0 && DateTime.UtcNow < until;)
        {
            await Task.Delay(100);
        }

        Assert.Equal(0, open.Count);
        int answers = 0;
        RpcException ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await stream.ResponseStream.MoveNext(CancellationToken.None))
            {
                answers++;
            }
        });

        // Ended by the server with its answers cut short (DEADLINE_EXCEEDED when the trailers still
        // went out, CANCELLED when the stream was reset), never as if all were answered.
        Assert.NotEqual(StatusCode.OK, ended.StatusCode);
        Assert.True(answers < 20, $"{answers} batches answered");
    }

    [Fact]
    public async Task ManyStreamsOnOneConnection_LeaveRoomForUnaryCalls()
    {
        await using InProcessEngine engine = await StartAsync(Backend.Sqlite);
        var streams = new List<AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck>>();
        for (int i = 0; i < 150; i++)
        {
            AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = engine.Purchases.Ingest();
            await stream.RequestStream.WriteAsync(Wire.Purchase(Program, "m1", $"s-{i}", 1_00));
            streams.Add(stream);
        }

        foreach (AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream in streams)
        {
            Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));
        }

        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m1" }, deadline: DateTime.UtcNow.AddSeconds(5));
        Assert.Equal(150, member.LastSequence - 1);
        foreach (AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream in streams)
        {
            await stream.RequestStream.CompleteAsync();
            stream.Dispose();
        }
    }

    private static async Task<InProcessEngine> StartAsync(Backend backend, params string[] args)
    {
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "hostile"), null, args);
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m1" });
        return engine;
    }

    private static async Task<RpcException> RefusedAsync<T>(Task<T> call)
    {
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => call);
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        return e;
    }
}
