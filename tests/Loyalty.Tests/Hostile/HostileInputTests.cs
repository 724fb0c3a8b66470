using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Api;
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
