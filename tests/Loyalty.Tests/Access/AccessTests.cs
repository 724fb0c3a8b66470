using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Api;
using Loyalty.Host.Access;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Access;

/// <summary>Keys, scopes, programs, stores and the audit trail, over a real channel to the real host.</summary>
public sealed class AccessTests(ITestOutputHelper output)
{
    private const string ProgramA = "shop-a", ProgramB = "shop-b";

    [Fact]
    public void Policy_ListsEveryMethodOfTheApi_AndEveryProgramScopedRequestNamesItsProgram()
    {
        foreach (MethodDescriptor method in RawCalls.AllMethods())
        {
            CallRule? rule = AccessPolicy.For(method.FullName());
            Assert.True(rule is not null, $"{method.FullName()} is not in AccessPolicy: nobody could call it");
            if (rule.ProgramScoped)
            {
                Assert.True(typeof(V1.IProgramScoped).IsAssignableFrom(method.InputType.ClrType),
                    $"{method.InputType.ClrType.Name} does not implement IProgramScoped");
            }

            if (method.InputType.FindFieldByName("store_id") is not null)
            {
                Assert.True(typeof(V1.IStoreScoped).IsAssignableFrom(method.InputType.ClrType),
                    $"{method.InputType.ClrType.Name} names a store but does not implement IStoreScoped");
            }
        }
    }

    [Fact]
    public void QuotaOptions_WithARateOfZeroOrABurstBelowOne_AreRefused_AndTheDefaultsPass()
    {
        Assert.Null(new QuotaOptions().Problem());
        Assert.NotNull(new QuotaOptions { Pos = new ScopeQuota { UnaryPerSecond = 0, UnaryBurst = 10, PurchasesPerSecond = 10, PurchasesBurst = 10, StreamsMax = 1 } }.Problem());
        Assert.NotNull(new QuotaOptions { Reader = new ScopeQuota { UnaryPerSecond = 10, UnaryBurst = 0.5, PurchasesPerSecond = 10, PurchasesBurst = 10, StreamsMax = 1 } }.Problem());
        Assert.NotNull(new QuotaOptions { Admin = new ScopeQuota { UnaryPerSecond = 10, UnaryBurst = 10, PurchasesPerSecond = 10, PurchasesBurst = 10, StreamsMax = -1 } }.Problem());
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task EveryCall_WithoutAValidKey_IsUnauthenticated_AndWritesNothing(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "noauth"));
        (string revoked, _) = await SetUpAsync(engine);
        await new V1.Access.AccessClient(engine.Invoker).RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = KeyId(revoked) });
        string wrongSecret = TestKeys.Operator[..^4] + (TestKeys.Operator.EndsWith("AAAA", StringComparison.Ordinal) ? "BBBB" : "AAAA");
        string[] badKeys = ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer " + KeyTokens.New().Token, "Bearer " + wrongSecret,
            "Bearer " + revoked, "Bearer " + new string('x', 4_000)];
        long ledgerRows = await Sql.ScalarAsync(engine.Storage, "SELECT count(*) FROM ledger_entries");

        int tried = 0, refused = 0;
        foreach (string authorization in badKeys)
        {
            CallInvoker invoker = authorization.Length == 0 ? engine.Channel.CreateCallInvoker() : RawKey(engine, authorization);
            foreach (MethodDescriptor method in RawCalls.AllMethods().Where(m => !m.IsClientStreaming))
            {
                tried++;
                StatusCode status = await RawCalls.UnaryStatusAsync(invoker, method, Valid(method));
                refused += status == StatusCode.Unauthenticated ? 1 : 0;
                Assert.True(status == StatusCode.Unauthenticated, $"{method.FullName()} with '{authorization[..Math.Min(20, authorization.Length)]}' answered {status}");
            }

            foreach (string stream in new[] { "Ingest", "IngestBatches" })
            {
                tried++;
                StatusCode status = await RawCalls.StreamStatusAsync(invoker, "loyalty.v1.Purchases", stream, Wire.Purchase(ProgramA, "m1", "t-noauth", 100).ToByteArray());
                Assert.Equal(StatusCode.Unauthenticated, status);
                refused++;
            }
        }

        output.WriteLine($"{tried} calls without a valid key ({badKeys.Length} kinds of credentials × every method), {refused} refused with UNAUTHENTICATED");
        Assert.Equal(tried, refused);
        Assert.Equal(ledgerRows, await Sql.ScalarAsync(engine.Storage, "SELECT count(*) FROM ledger_entries"));
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramA, MemberId = "m1" });
        Assert.Equal(0, member.Balance);
        RpcException none = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = "evil" }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, none.StatusCode);
    }

    [Fact]
    public async Task EachScope_MayMakeExactlyTheCallsOfThePolicy()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "scopes"));
        await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Invoker);
        foreach (V1.KeyScope scope in new[] { V1.KeyScope.Admin, V1.KeyScope.Pos, V1.KeyScope.Support, V1.KeyScope.Reader })
        {
            string key = (await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = scope, Name = scope.ToString() })).Secret;
            CallInvoker invoker = engine.Channel.WithKey(key);
            Scopes set = ((AccessScope)(int)scope).AsSet();
            foreach (MethodDescriptor method in RawCalls.AllMethods().Where(m => !m.IsClientStreaming))
            {
                CallRule rule = AccessPolicy.For(method.FullName())!;
                StatusCode status = await RawCalls.UnaryStatusAsync(invoker, method, RawCalls.Request(method, ProgramA));
                bool allowed = (rule.Scopes & set) != 0;
                Assert.True(allowed ? status is not (StatusCode.PermissionDenied or StatusCode.Unauthenticated) : status == StatusCode.PermissionDenied,
                    $"{scope} on {method.FullName()}: {status}, the policy {(allowed ? "allows" : "refuses")} it");
            }

            StatusCode ingest = await RawCalls.StreamStatusAsync(invoker, "loyalty.v1.Purchases", "Ingest");
            Assert.Equal(scope == V1.KeyScope.Pos ? StatusCode.OK : StatusCode.PermissionDenied, ingest);
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ProgramKeys_OnAnotherProgram_ArePermissionDenied_AndChangeNothing(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "tenants"));
        (string posA, string adminA) = await SetUpAsync(engine);
        var posOnA = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(posA));
        var adminOnA = engine.Channel.WithKey(adminA);

        RpcException accrue = await Assert.ThrowsAsync<RpcException>(() => posOnA.AccrueAsync(Wire.Purchase(ProgramB, "m1", "t-cross", 10_00)).ResponseAsync);
        RpcException put = await Assert.ThrowsAsync<RpcException>(() => new V1.ProgramAdmin.ProgramAdminClient(adminOnA).PutProgramAsync(Wire.Program(ProgramB, rate: 10_000)).ResponseAsync);
        RpcException read = await Assert.ThrowsAsync<RpcException>(() => new V1.Members.MembersClient(adminOnA).GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramB, MemberId = "m1" }).ResponseAsync);
        RpcException key = await Assert.ThrowsAsync<RpcException>(() => new V1.Access.AccessClient(adminOnA).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramB, Scope = V1.KeyScope.Admin, Name = "mine now" }).ResponseAsync);
        RpcException operatorKey = await Assert.ThrowsAsync<RpcException>(() => new V1.Access.AccessClient(adminOnA).CreateKeyAsync(new V1.CreateKeyRequest { Scope = V1.KeyScope.Operator, Name = "root" }).ResponseAsync);

        Assert.All(new[] { accrue, put, read, key, operatorKey }, e => Assert.Equal(StatusCode.PermissionDenied, e.StatusCode));
        Assert.Contains("another program", accrue.Status.Detail, StringComparison.Ordinal);
        V1.Program programB = await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = ProgramB });
        Assert.Equal(1, programB.Settings.EarnPointsPerUnit);
        Assert.Equal(0, (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramB, MemberId = "m1" })).Balance);
        Assert.Empty((await new V1.Access.AccessClient(engine.Invoker).ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramB })).Keys);
    }

    [Fact]
    public async Task PosKey_RestrictedToStores_RefusesOtherStores_AndTheStreamGoesOn()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "stores"));
        await SetUpAsync(engine);
        V1.CreatedKey key = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "store 1 tills", StoreIds = { "store-1" },
        });
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(key.Secret));
        V1.Purchase elsewhere = Wire.Purchase(ProgramA, "m1", "t-store-2", 10_00);
        elsewhere.StoreId = "store-2";

        RpcException unary = await Assert.ThrowsAsync<RpcException>(() => till.AccrueAsync(elsewhere).ResponseAsync);
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = till.Ingest();
        await stream.RequestStream.WriteAsync(elsewhere);
        await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", "t-store-1", 10_00));
        await stream.RequestStream.CompleteAsync();
        List<V1.PurchaseAck> acks = [];
        while (await stream.ResponseStream.MoveNext(CancellationToken.None))
        {
            acks.Add(stream.ResponseStream.Current);
        }

        Assert.Equal(StatusCode.PermissionDenied, unary.StatusCode);
        Assert.Contains("store-2", unary.Status.Detail, StringComparison.Ordinal);
        V1.PurchaseAck refused = Assert.Single(acks, a => a.TransactionId == "t-store-2");
        Assert.Equal((V1.AckStatus.Rejected, "PERMISSION_DENIED"), (refused.Status, refused.ErrorCode));
        Assert.Equal(V1.AckStatus.Accepted, Assert.Single(acks, a => a.TransactionId == "t-store-1").Status);
        Assert.Equal(1, await Sql.ScalarAsync(engine.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{ProgramA}' AND kind = 2"));
        Assert.Equal(["store-1"], key.Key.StoreIds);
    }

    [Fact]
    public async Task PosKey_RestrictedToStores_EndsAndInspectsOnlyWhatItsStoresMade()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "storeends"));
        await SetUpAsync(engine);
        V1.PutProgramRequest program = Wire.Program(ProgramA);
        program.Settings.Rewards.Add(new V1.Reward { Id = "mug", Name = "Mug", Kind = V1.RewardKind.Product, Sku = "mug", PointsPrice = 30, ValueMinor = 4_50 });
        program.Settings.TradeIn = new V1.TradeInPolicy { Rates = { new V1.TradeInRate { Category = "jackets", Condition = V1.TradeInCondition.Good, CreditMinor = 30_00 } } };
        await engine.Programs.PutProgramAsync(program);
        await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = ProgramA, MemberId = "m1", TransactionId = "welcome", Points = 500, Reason = "welcome" });
        var anyStore = new V1.Redemptions.RedemptionsClient(engine.Invoker);
        await anyStore.ReserveAsync(new V1.ReserveRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r1", RewardId = "mug", StoreId = "store-1" });
        await anyStore.ReserveAsync(new V1.ReserveRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r2", RewardId = "mug", StoreId = "store-2" });
        await engine.Members.SubmitTradeInAsync(new V1.SubmitTradeInRequest { ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-2", Category = "jackets", StoreId = "store-2" });
        // Made without a store, by a key not restricted to stores (the web shop's).
        await anyStore.ReserveAsync(new V1.ReserveRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r3", RewardId = "mug" });
        await engine.Members.SubmitTradeInAsync(new V1.SubmitTradeInRequest { ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-3", Category = "jackets" });
        V1.CreatedKey key = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "store 1 tills", StoreIds = { "store-1" },
        });
        var till = new V1.Redemptions.RedemptionsClient(engine.Channel.WithKey(key.Secret));
        var tillMembers = new V1.Members.MembersClient(engine.Channel.WithKey(key.Secret));

        RpcException unnamed = await Assert.ThrowsAsync<RpcException>(() =>
            till.CancelReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r2" }).ResponseAsync);
        RpcException otherStore = await Assert.ThrowsAsync<RpcException>(() =>
            till.CancelReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r2", StoreId = "store-1" }).ResponseAsync);
        RpcException otherItem = await Assert.ThrowsAsync<RpcException>(() => tillMembers.InspectTradeInAsync(new V1.InspectTradeInRequest
        {
            ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-2", Condition = V1.TradeInCondition.Good, StoreId = "store-1",
        }).ResponseAsync);
        RpcException storeless = await Assert.ThrowsAsync<RpcException>(() =>
            till.CommitReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r3", StoreId = "store-1" }).ResponseAsync);
        RpcException storelessItem = await Assert.ThrowsAsync<RpcException>(() => tillMembers.InspectTradeInAsync(new V1.InspectTradeInRequest
        {
            ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-3", Condition = V1.TradeInCondition.Good, StoreId = "store-1",
        }).ResponseAsync);
        V1.RedemptionAck own = await till.CommitReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r1", StoreId = "store-1" });
        V1.RedemptionAck byAnyStore = await anyStore.CancelReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r2" });
        // Once ended, r2 is still store-2's: store 1's tills are not told how it ended either.
        RpcException endedElsewhere = await Assert.ThrowsAsync<RpcException>(() =>
            till.CancelReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r2", StoreId = "store-1" }).ResponseAsync);
        V1.RedemptionAck ownAgain = await till.CommitReservationAsync(new V1.ReservationRequest { ProgramId = ProgramA, MemberId = "m1", ReservationId = "r1", StoreId = "store-1" });
        // Once inspected by store 2, the trade-in is still store 2's: a resent inspection from store 1 is not told its grade.
        await engine.Members.InspectTradeInAsync(new V1.InspectTradeInRequest { ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-2", Condition = V1.TradeInCondition.Good, StoreId = "store-2" });
        RpcException inspectedElsewhere = await Assert.ThrowsAsync<RpcException>(() => tillMembers.InspectTradeInAsync(new V1.InspectTradeInRequest
        {
            ProgramId = ProgramA, MemberId = "m1", TradeInId = "ti-2", Condition = V1.TradeInCondition.Good, StoreId = "store-1",
        }).ResponseAsync);
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramA, MemberId = "m1" });

        Assert.Equal((StatusCode.PermissionDenied, StatusCode.PermissionDenied, StatusCode.PermissionDenied), (unnamed.StatusCode, otherStore.StatusCode, otherItem.StatusCode));
        Assert.Contains("reservation 'r2' was made at store 'store-2'", otherStore.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("trade-in 'ti-2' was handed in at store 'store-2'", otherItem.Status.Detail, StringComparison.Ordinal);
        // Before: a till of store 1 committed the web shop's reservation and graded its item.
        Assert.Equal((StatusCode.PermissionDenied, StatusCode.PermissionDenied), (storeless.StatusCode, storelessItem.StatusCode));
        Assert.Contains("reservation 'r3' was made without a store", storeless.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("trade-in 'ti-3' was handed in without a store", storelessItem.Status.Detail, StringComparison.Ordinal);
        Assert.Equal((V1.ReservationState.Committed, V1.ReservationState.Cancelled), (own.Reservation, byAnyStore.Reservation));
        // Before: the resend was answered as a duplicate, with store 2's reward and points.
        Assert.Equal(StatusCode.PermissionDenied, endedElsewhere.StatusCode);
        Assert.Contains("reservation 'r2' was made at store 'store-2'", endedElsewhere.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(V1.ReservationState.Committed, ownAgain.Reservation);
        Assert.Equal(StatusCode.PermissionDenied, inspectedElsewhere.StatusCode);
        Assert.Contains("trade-in 'ti-2' was handed in at store 'store-2'", inspectedElsewhere.Status.Detail, StringComparison.Ordinal);
        Assert.Equal((470L, 30_00L), (member.Balance, member.WalletMinor));
    }

    /// <summary>
    /// The key is checked when a call's headers arrive, before its body is read (KeyFirst); a key
    /// revoked while a slow body is still on its way is refused when the body has come, not let
    /// through on the first check.
    /// </summary>
    [Fact]
    public async Task AKeyRevokedWhileACallsBodyIsOnItsWay_IsUnauthenticated_AndWritesNothing()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "slowbody"));
        (string pos, _) = await SetUpAsync(engine);
        using HttpClient http = GrpcFrames.Client();
        var body = new HeldBackContent(GrpcFrames.Frame(Wire.Purchase(ProgramA, "m1", "slow-1", 10_00).ToByteArray()));

        Task<(StatusCode Code, string Message)> call = GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Purchases/Accrue", body, pos);
        await body.Started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Delay(300);
        await new V1.Access.AccessClient(engine.Invoker).RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = KeyId(pos) });
        body.Release.SetResult();
        (StatusCode code, string message) = await call;

        Assert.Equal((StatusCode.Unauthenticated, "the key was revoked"), (code, message));
        Assert.Equal(0, (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramA, MemberId = "m1" })).Balance);
    }

    /// <summary>A request body sent only when released: the call's headers go first.</summary>
    private sealed class HeldBackContent(byte[] bytes) : HttpContent
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
        {
            Started.TrySetResult();
            await Release.Task;
            await stream.WriteAsync(bytes);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = bytes.Length;
            return true;
        }
    }

    [Fact]
    public async Task Ingest_ForAnotherProgram_IsRejectedPerPurchase_AndTheStreamGoesOn()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "streamprog"));
        (string pos, _) = await SetUpAsync(engine);
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos));

        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> stream = till.IngestBatches();
        await stream.RequestStream.WriteAsync(new V1.PurchaseBatch { Purchases = { Wire.Purchase(ProgramB, "m1", "b-1", 10_00), Wire.Purchase(ProgramA, "m1", "a-1", 10_00) } });
        await stream.RequestStream.CompleteAsync();
        Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));
        V1.PurchaseBatchAck answer = stream.ResponseStream.Current;

        Assert.Equal("PERMISSION_DENIED", answer.Acks[0].ErrorCode);
        Assert.Equal(V1.AckStatus.Accepted, answer.Acks[1].Status);
        Assert.Equal(0, (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = ProgramB, MemberId = "m1" })).Balance);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Keys_AreCreatedListedAndRevoked_AndTheSecretIsShownOnce(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "keys"));
        (_, string adminA) = await SetUpAsync(engine);
        var admin = new V1.Access.AccessClient(engine.Channel.WithKey(adminA));

        V1.CreatedKey reader = await admin.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "dashboards" });
        V1.ApiKey me = await new V1.Access.AccessClient(engine.Channel.WithKey(reader.Secret)).WhoAmIAsync(new V1.WhoAmIRequest());
        V1.ListKeysResponse listed = await admin.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA });
        V1.ApiKey revoked = await admin.RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = reader.Key.KeyId });
        RpcException after = await Assert.ThrowsAsync<RpcException>(() =>
            new V1.Access.AccessClient(engine.Channel.WithKey(reader.Secret)).WhoAmIAsync(new V1.WhoAmIRequest()).ResponseAsync);
        V1.ListKeysResponse active = await admin.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA });
        V1.ListKeysResponse all = await admin.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true });

        Assert.StartsWith(KeyTokens.Prefix + reader.Key.KeyId + ".", reader.Secret, StringComparison.Ordinal);
        Assert.Equal((reader.Key.KeyId, V1.KeyScope.Reader, ProgramA), (me.KeyId, me.Scope, me.ProgramId));
        Assert.Equal(KeyId(adminA), me.CreatedBy);
        Assert.Contains(listed.Keys, k => k.KeyId == reader.Key.KeyId);
        Assert.DoesNotContain(reader.Secret[(KeyTokens.Prefix.Length + KeyTokens.KeyIdLength + 1)..], listed.ToString(), StringComparison.Ordinal);
        Assert.NotNull(revoked.RevokedAt);
        Assert.Equal((StatusCode.Unauthenticated, "the key was revoked"), (after.StatusCode, after.Status.Detail));
        Assert.DoesNotContain(active.Keys, k => k.KeyId == reader.Key.KeyId);
        Assert.Contains(all.Keys, k => k.KeyId == reader.Key.KeyId && k.RevokedAt is not null);
        string stored = Assert.Single(await Sql.RowsAsync(engine.Storage, $"SELECT secret_sha256 FROM access_keys WHERE key_id = '{reader.Key.KeyId}'", r => r.GetString(0)));
        Assert.Equal(KeyTokens.Hash(reader.Secret[(KeyTokens.Prefix.Length + KeyTokens.KeyIdLength + 1)..]), stored);
    }

    [Fact]
    public async Task CreateKey_ByAProgramsAdmin_BeyondTheDaysAllowance_IsRefused_RevokedKeysIncluded_ButNotForOperators()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "keyday"), null, "--Auth:KeysCreatedPerDayMax=4");
        (_, string admin) = await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Channel.WithKey(admin));
        int before = (await access.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true })).Keys.Count;
        for (int i = before; i < 4; i++)
        {
            // Made and revoked at once: none stays active, yet each is held by every node.
            V1.CreatedKey made = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "loop " + i });
            await access.RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = made.Key.KeyId });
        }

        RpcException refused = await Assert.ThrowsAsync<RpcException>(() =>
            access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "one more" }).ResponseAsync);
        int held = (await access.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true })).Keys.Count;
        V1.CreatedKey byOperator = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(
            new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "issued by the operators" });

        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Equal("at most 4 keys created in 24 hours, revoked ones included; try again later", refused.Status.Detail);
        Assert.Equal(4, held);
        Assert.Equal("issued by the operators", byOperator.Key.Name);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task CreateKey_SentAtOnce_ByAProgramsAdmin_NeverPassesTheDaysAllowance(Backend backend)
    {
        const int Allowance = 5, Sent = 40;
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "keydayrace"), null, $"--Auth:KeysCreatedPerDayMax={Allowance}");
        (_, string admin) = await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Channel.WithKey(admin));
        int before = (await access.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true })).Keys.Count;

        StatusCode[] codes = await Task.WhenAll(Enumerable.Range(0, Sent).Select(i => Task.Run(async () =>
        {
            try
            {
                await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "at once " + i });
                return StatusCode.OK;
            }
            catch (RpcException e)
            {
                Assert.True(e.StatusCode != StatusCode.ResourceExhausted || e.Status.Detail.StartsWith($"at most {Allowance} keys created", StringComparison.Ordinal), e.Status.Detail);
                return e.StatusCode;
            }
        })));
        long stored = Assert.Single(await Sql.RowsAsync(engine.Storage, $"SELECT COUNT(*) FROM access_keys WHERE program_id = '{ProgramA}'", r => r.GetInt64(0)));

        Assert.Equal(Allowance - before, codes.Count(c => c == StatusCode.OK));
        Assert.Equal(Sent - (Allowance - before), codes.Count(c => c == StatusCode.ResourceExhausted));
        Assert.Equal(Allowance, stored);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task KeyInserts_FromTwoNodesAtOnce_KeepEveryBound(Backend backend)
    {
        await WithStoresAsync(backend, "keybounds", async (engine, nodes) =>
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            var byDay = new KeyAllowance(ActiveMax: 1_000, CreatedMax: 7, now.AddDays(-1), now);
            var byActive = new KeyAllowance(ActiveMax: 4, CreatedMax: int.MaxValue, now.AddDays(-1), now);

            KeyInsert[] day = await InsertAtOnceAsync(nodes, "race-day", byDay, 100);
            KeyInsert[] active = await InsertAtOnceAsync(nodes, "race-active", byActive, 100);

            Assert.Equal((7, 93), (day.Count(o => o == KeyInsert.Inserted), day.Count(o => o == KeyInsert.TooManyCreated)));
            Assert.Equal((4, 96), (active.Count(o => o == KeyInsert.Inserted), active.Count(o => o == KeyInsert.TooManyActive)));
            Assert.Equal([7L, 4L], await Sql.RowsAsync(engine.Storage,
                "SELECT COUNT(*) FROM access_keys WHERE program_id IN ('race-day', 'race-active') GROUP BY program_id ORDER BY program_id DESC", r => r.GetInt64(0)));
        });
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task RevokingEveryOperatorKeyAtOnce_FromTwoNodes_LeavesExactlyOneWorking(Backend backend)
    {
        const int Rounds = 20, AddedPerRound = 3;
        await WithStoresAsync(backend, "lastoperator", async (engine, nodes) =>
        {
            var refusedPerRound = new List<int>();
            for (int round = 0; round < Rounds; round++)
            {
                for (int i = 0; i < AddedPerRound; i++)
                {
                    Assert.Equal(KeyInsert.Inserted, await nodes[0].InsertKeyAsync(NewRow("", $"operator {round}.{i}"), null, CancellationToken.None));
                }

                List<string> working = await Sql.RowsAsync(engine.Storage, "SELECT key_id FROM access_keys WHERE program_id = '' AND revoked_at IS NULL", r => r.GetString(0));
                DateTimeOffset at = DateTimeOffset.UtcNow;
                KeyRevocation[] outcomes = await Task.WhenAll(working.Select((id, n) =>
                    Task.Run(() => nodes[n % 2].RevokeKeyAsync(id, at, CancellationToken.None))));
                refusedPerRound.Add(outcomes.Count(o => o.LastOperatorKey));
                Assert.All(outcomes, o => Assert.Equal(o.LastOperatorKey, o.Key!.RevokedAt is null));
            }

            long left = Assert.Single(await Sql.RowsAsync(engine.Storage, "SELECT COUNT(*) FROM access_keys WHERE program_id = '' AND revoked_at IS NULL", r => r.GetInt64(0)));
            Assert.Equal(Enumerable.Repeat(1, Rounds), refusedPerRound);
            Assert.Equal(1, left);
        });
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task RevokingAnOperatorKey_LeavingOnlyOneThatExpiresWithinTheHour_IsRefused(Backend backend)
    {
        await WithStoresAsync(backend, "operatormargin", async (engine, nodes) =>
        {
            IAccessStore store = nodes[0];
            List<string> before = await Sql.RowsAsync(engine.Storage, "SELECT key_id FROM access_keys WHERE program_id = '' AND revoked_at IS NULL", r => r.GetString(0));
            DateTimeOffset now = DateTimeOffset.UtcNow;
            AccessKeyRow soon = NewRow("", "expires in 30 minutes") with { ExpiresAt = now.AddMinutes(30) };
            AccessKeyRow later = NewRow("", "expires in 2 hours") with { ExpiresAt = now.AddHours(2) };
            Assert.Equal(KeyInsert.Inserted, await store.InsertKeyAsync(soon, null, CancellationToken.None));

            KeyRevocation[] withSoonOnly = [.. await Task.WhenAll(before.Select(id => store.RevokeKeyAsync(id, now, CancellationToken.None)))];
            Assert.Equal(KeyInsert.Inserted, await store.InsertKeyAsync(later, null, CancellationToken.None));
            KeyRevocation[] withLater = [.. await Task.WhenAll(before.Select(id => store.RevokeKeyAsync(id, now, CancellationToken.None)))];

            Assert.Single(before);
            Assert.True(withSoonOnly.Single().LastOperatorKey, "revoked although the only other operator key expires within the hour");
            Assert.Null(withSoonOnly.Single().Key!.RevokedAt);
            Assert.False(withLater.Single().LastOperatorKey);
            Assert.NotNull(withLater.Single().Key!.RevokedAt);
        });
    }

    [Fact]
    public async Task NodesStartingAtOnce_OnAnEmptyDatabase_MakeExactlyOneFirstOperatorKey()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "bootstraprace");
        string[] files = [.. Enumerable.Range(0, 3).Select(i => Path.Combine(TestDatabases.TempFolder(), "node" + i, "operator.key"))];
        InProcessEngine[] nodes = await Task.WhenAll(files.Select(file =>
            InProcessEngine.StartAsync(storage, null, "--Auth:BootstrapOperatorKey=", $"--Auth:OperatorKeyFile={file}")));
        try
        {
            string[] written = [.. files.Where(File.Exists)];
            long stored = Assert.Single(await Sql.RowsAsync(storage, "SELECT COUNT(*) FROM access_keys WHERE program_id = ''", r => r.GetInt64(0)));
            string key = await File.ReadAllTextAsync(Assert.Single(written));
            // Each node reads the others' keys within its refresh interval.
            TimeSpan[] known = await Task.WhenAll(nodes.Select(n =>
                TimeUntilAsync(async () => await StatusAsync(new V1.Access.AccessClient(n.Channel.WithKey(key))) == StatusCode.OK)));

            Assert.Equal(1, stored);
            Assert.All(known, took => Assert.True(took < TimeSpan.FromSeconds(10), $"a node knew the first operator key after {took}"));
        }
        finally
        {
            foreach (InProcessEngine node in nodes)
            {
                await node.DisposeAsync();
            }
        }
    }

    private static IAccessStore NewAccessStore(StorageOptions storage) => storage.Provider == StorageProvider.Postgres
        ? new PostgresAccessStore(storage.ConnectionString)
        : new SqliteAccessStore(storage.ConnectionString);

    private static AccessKeyRow NewRow(string programId, string name)
    {
        (string keyId, string secret, _) = KeyTokens.New();
        return new AccessKeyRow(keyId, programId, programId.Length == 0 ? "operator" : "reader", "", name, KeyTokens.Hash(secret),
            DateTimeOffset.UtcNow, "test", ExpiresAt: null, RevokedAt: null);
    }

    private static Task<KeyInsert[]> InsertAtOnceAsync(IAccessStore[] nodes, string programId, KeyAllowance allowance, int count) =>
        Task.WhenAll(Enumerable.Range(0, count).Select(i =>
            Task.Run(() => nodes[i % nodes.Length].InsertKeyAsync(NewRow(programId, "at once " + i), allowance, CancellationToken.None))));

    /// <summary>
    /// Runs <paramref name="body"/> with an engine on a fresh database and two access stores of
    /// their own on it, which stand for two nodes: the key bounds are the database's, not a node's.
    /// </summary>
    private static async Task WithStoresAsync(Backend backend, string name, Func<InProcessEngine, IAccessStore[], Task> body)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, name));
        IAccessStore[] nodes = [NewAccessStore(engine.Storage), NewAccessStore(engine.Storage)];
        try
        {
            await body(engine, nodes);
        }
        finally
        {
            foreach (IAsyncDisposable store in nodes.OfType<IAsyncDisposable>())
            {
                await store.DisposeAsync();
            }
        }
    }

    [Fact]
    public void TheKeyAllowanceAndTheDaysEndedKeysAreKept_AreAtLeastOne()
    {
        var registry = new KeyRegistry(new MemoryAccessStore(TimeProvider.System), Options.Create(new AuthOptions { KeysCreatedPerDayMax = 0, EndedKeysKeptDays = -5 }),
            Options.Create(new QuotaOptions()), TimeProvider.System, NullLogger<KeyRegistry>.Instance);

        Assert.Equal((1, TimeSpan.FromDays(1)), (registry.KeysCreatedPerDayMax, registry.EndedKeysKept));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task KeysThatEndedLongerAgoThanTheyAreKept_AreForgotten_AndTheirRowsCleared_ButTheirIdsNeverStoredAgain(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "keyforget"));
        await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Invoker);
        V1.CreatedKey revoked = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "revoked" });
        await access.RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = revoked.Key.KeyId });
        V1.CreatedKey expiring = await access.CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "expiring", ExpiresAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddDays(2)),
        });
        V1.CreatedKey active = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "active" });

        // A node of its own on the same database, whose clock moves on by days.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var registry = new KeyRegistry(engine.Services.GetRequiredService<IAccessStore>(), Options.Create(new AuthOptions { EndedKeysKeptDays = 30 }),
            engine.Services.GetRequiredService<IOptions<QuotaOptions>>(), clock, NullLogger<KeyRegistry>.Instance);
        await registry.RefreshAsync(CancellationToken.None);
        clock.Advance(TimeSpan.FromDays(31));
        await registry.ForgetEndedKeysAsync(CancellationToken.None);
        bool revokedKeptAt31 = registry.Find(revoked.Key.KeyId) is not null, expiringKeptAt31 = registry.Find(expiring.Key.KeyId) is not null;
        clock.Advance(TimeSpan.FromDays(2));
        await registry.ForgetEndedKeysAsync(CancellationToken.None);
        List<string> stored = await Sql.RowsAsync(engine.Storage, $"SELECT name FROM access_keys WHERE program_id = '{ProgramA}' ORDER BY name", r => r.GetString(0));
        AccessKeyRow again = new(revoked.Key.KeyId, ProgramA, "reader", "", "revived", new string('0', 64), DateTimeOffset.UtcNow, "test", null, null);
        bool storedAgain = await engine.Services.GetRequiredService<IAccessStore>().InsertKeyAsync(again, null, CancellationToken.None) == KeyInsert.Inserted;
        await registry.RefreshAsync(CancellationToken.None);

        Assert.False(revokedKeptAt31);
        Assert.True(expiringKeptAt31, "expired a day before the 31st: kept for 30 days");
        Assert.Null(registry.Find(expiring.Key.KeyId));
        Assert.NotNull(registry.Find(active.Key.KeyId));
        Assert.Equal(["", "", "active", "admin", "tills"], stored);
        Assert.False(storedAgain);
        Assert.Null(registry.Find(revoked.Key.KeyId));
    }

    [Fact]
    public async Task CreateKey_Refusals_NameTheirReason()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "keyrules"));
        await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Invoker);
        (V1.CreateKeyRequest Request, StatusCode Code, string Says)[] cases =
        [
            (new() { ProgramId = ProgramA, Name = "x" }, StatusCode.InvalidArgument, "scope is required"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Pos }, StatusCode.InvalidArgument, "name is required"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Operator, Name = "x" }, StatusCode.InvalidArgument, "operator keys belong to no program"),
            (new() { ProgramId = "nope", Scope = V1.KeyScope.Pos, Name = "x" }, StatusCode.NotFound, "program 'nope' not found"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "x", StoreIds = { "s1" } }, StatusCode.InvalidArgument, "store_ids restrict POS keys only"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "x", StoreIds = { "bad store" } }, StatusCode.InvalidArgument, "store_ids may contain only"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "x", ExpiresAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddDays(-1)) }, StatusCode.InvalidArgument, "expires_at must lie in the future"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "x", ExpiresAt = new Timestamp { Seconds = long.MaxValue } }, StatusCode.InvalidArgument, "expires_at is out of range"),
            (new() { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = new string('n', 100_000) }, StatusCode.InvalidArgument, "name is required and at most 200"),
        ];
        string keysBefore = (await access.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true })).ToString();

        foreach ((V1.CreateKeyRequest request, StatusCode code, string says) in cases)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(() => access.CreateKeyAsync(request).ResponseAsync);
            Assert.Equal(code, e.StatusCode);
            Assert.Contains(says, e.Status.Detail, StringComparison.Ordinal);
            Assert.True(e.Status.Detail.Length < 300, "the refusal echoes too much");
        }

        Assert.Equal(keysBefore, (await access.ListKeysAsync(new V1.ListKeysRequest { ProgramId = ProgramA, IncludeRevoked = true })).ToString());
        V1.ApiKey self = await access.WhoAmIAsync(new V1.WhoAmIRequest());
        RpcException last = await Assert.ThrowsAsync<RpcException>(() => access.RevokeKeyAsync(new V1.RevokeKeyRequest { KeyId = self.KeyId }).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, last.StatusCode);
    }

    [Fact]
    public async Task AKeyThatExpires_MakesOnlyKeysThatExpireNoLater()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "keyoutlive"));
        await SetUpAsync(engine);
        DateTimeOffset hourAway = DateTimeOffset.UtcNow.AddHours(1);
        V1.CreatedKey contractor = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Admin, Name = "contractor", ExpiresAt = Timestamp.FromDateTimeOffset(hourAway),
        });
        var access = new V1.Access.AccessClient(engine.Channel.WithKey(contractor.Secret));

        RpcException forGood = await Assert.ThrowsAsync<RpcException>(() =>
            access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Admin, Name = "forever" }).ResponseAsync);
        RpcException longer = await Assert.ThrowsAsync<RpcException>(() => access.CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "longer", ExpiresAt = Timestamp.FromDateTimeOffset(hourAway.AddMinutes(1)),
        }).ResponseAsync);
        V1.CreatedKey within = await access.CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "within", ExpiresAt = Timestamp.FromDateTimeOffset(hourAway.AddMinutes(-1)),
        });

        Assert.Equal((StatusCode.InvalidArgument, StatusCode.InvalidArgument), (forGood.StatusCode, longer.StatusCode));
        Assert.Contains("the calling key expires at", forGood.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("within", within.Key.Name);
    }

    [Fact]
    public async Task RevokedKey_IsRefusedByEveryNode_WithinAFewRefreshes()
    {
        // Each node reads changed keys every Auth:RefreshIntervalMs. The bound below is eight of
        // those intervals: a node that never read the change would fail it, while a suite busy on two
        // cores (where one 1 s interval once took 2.2 s to show) does not.
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "revoke");
        const string Interval = "--Auth:RefreshIntervalMs=250";
        await using InProcessEngine first = await InProcessEngine.StartAsync(storage, null, Interval);
        await using InProcessEngine second = await InProcessEngine.StartAsync(storage, null, Interval);
        await first.Programs.PutProgramAsync(Wire.Program(ProgramA));
        var access = new V1.Access.AccessClient(first.Invoker);
        V1.CreatedKey key = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "two nodes" });
        var onSecond = new V1.Access.AccessClient(second.Channel.WithKey(key.Secret));

        TimeSpan known = await TimeUntilAsync(async () => await StatusAsync(onSecond) == StatusCode.OK);
        await access.RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = key.Key.KeyId });
        TimeSpan refused = await TimeUntilAsync(async () => await StatusAsync(onSecond) == StatusCode.Unauthenticated);

        Assert.True(known < TimeSpan.FromSeconds(2), $"the new key worked on the other node after {known}");
        Assert.True(refused < TimeSpan.FromSeconds(2), $"the revoked key was refused by the other node after {refused}");
    }

    [Fact]
    public async Task Quotas_OverTheRate_AreResourceExhaustedWithRetryAfter_AndAStreamGoesOn()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "quota"), null,
            "--Quotas:Reader:UnaryPerSecond=0.5", "--Quotas:Reader:UnaryBurst=3",
            "--Quotas:Pos:PurchasesPerSecond=0.5", "--Quotas:Pos:PurchasesBurst=5", "--Quotas:Pos:StreamsMax=1");
        (string pos, _) = await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Invoker);
        string reader = (await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "r" })).Secret;
        var members = new V1.Members.MembersClient(engine.Channel.WithKey(reader));
        var get = new V1.GetMemberRequest { ProgramId = ProgramA, MemberId = "m1" };
        for (int i = 0; i < 3; i++)
        {
            await members.GetMemberAsync(get);
        }

        RpcException over = await Assert.ThrowsAsync<RpcException>(() => members.GetMemberAsync(get).ResponseAsync);
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos));
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = till.Ingest();
        Assert.True(await StreamIsOpenAsync(stream));
        StatusCode second = await RawCalls.StreamStatusAsync(engine.Channel.WithKey(pos), "loyalty.v1.Purchases", "Ingest");
        for (int i = 0; i < 8; i++)
        {
            await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", $"q-{i}", 1_00));
        }

        List<V1.PurchaseAck> acks = await ReadAsync(stream, 8);
        await Task.Delay(TimeSpan.FromSeconds(2.1));
        await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", "q-later", 1_00));
        V1.PurchaseAck later = (await ReadAsync(stream, 1))[0];
        await stream.RequestStream.CompleteAsync();

        Assert.Equal(StatusCode.ResourceExhausted, over.StatusCode);
        Assert.True(over.RetryAfter() > TimeSpan.Zero, "no retry-after-ms trailer");
        Assert.Equal(StatusCode.ResourceExhausted, second);
        // The stream's first purchase (the open check) took one token of 5; a new one comes every 2 s.
        Assert.Equal(4, acks.Count(a => a.Status == V1.AckStatus.Accepted));
        Assert.All(acks.Where(a => a.Status == V1.AckStatus.Rejected), a =>
        {
            Assert.Equal("RESOURCE_EXHAUSTED", a.ErrorCode);
            Assert.True(a.RetryAfterMs > 0);
        });
        Assert.Equal(V1.AckStatus.Accepted, later.Status);
    }

    [Fact]
    public async Task KeyRevokedWhileItsStreamIsOpen_EndsTheStream_Unauthenticated()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "revokestream"));
        (string pos, _) = await SetUpAsync(engine);
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos)).Ingest();
        await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", "before-revoke", 1_00));
        V1.PurchaseAck before = (await ReadAsync(stream, 1))[0];

        await new V1.Access.AccessClient(engine.Invoker).RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = KeyId(pos) });
        await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", "after-revoke", 1_00));
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));

        Assert.Equal(V1.AckStatus.Accepted, before.Status);
        Assert.Equal((StatusCode.Unauthenticated, "the key was revoked"), (ended.StatusCode, ended.Status.Detail));
        Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, "SELECT count(*) FROM ledger_entries WHERE txn_id = 'after-revoke'"));
    }

    [Fact]
    public async Task KeyRevokedWhileItsEventStreamIsOpen_EndsTheStream_Unauthenticated_BeforeAnotherEvent()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "revokeevents"));
        (string pos, _) = await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Invoker);
        V1.CreatedKey crm = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "crm" });
        var till = new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using AsyncServerStreamingCall<V1.Event> events = new V1.Events.EventsClient(engine.Channel.WithKey(crm.Secret))
            .Subscribe(new V1.SubscribeRequest { ProgramId = ProgramA }, cancellationToken: cancel.Token);
        await events.ResponseHeadersAsync;
        await till.AccrueAsync(Wire.Purchase(ProgramA, "m1", "seen", 1_00));
        Assert.True(await events.ResponseStream.MoveNext(cancel.Token));
        V1.Event seen = events.ResponseStream.Current;

        await access.RevokeKeyAsync(new V1.RevokeKeyRequest { ProgramId = ProgramA, KeyId = crm.Key.KeyId });
        await till.AccrueAsync(Wire.Purchase(ProgramA, "m1", "unseen", 1_00));
        RpcException ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await events.ResponseStream.MoveNext(cancel.Token))
            {
                Assert.Fail($"an event reached a revoked key: {events.ResponseStream.Current}");
            }
        });

        Assert.Equal("m1", seen.MemberId);
        Assert.Equal((StatusCode.Unauthenticated, "the key was revoked"), (ended.StatusCode, ended.Status.Detail));
    }

    [Fact]
    public async Task OpeningAStream_TakesACallFromTheKeysRate()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "streamrate"), null,
            "--Quotas:Reader:UnaryPerSecond=0.1", "--Quotas:Reader:UnaryBurst=2");
        await SetUpAsync(engine);
        string reader = (await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "r" })).Secret;
        var events = new V1.Events.EventsClient(engine.Channel.WithKey(reader));
        var opened = new List<StatusCode>();
        for (int i = 0; i < 3; i++)
        {
            // An open stream waits for events (none come), so reading is ended after a second; a refused one ends at once.
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            using var call = events.Subscribe(new V1.SubscribeRequest { ProgramId = ProgramA }, cancellationToken: wait.Token);
            RpcException end = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(wait.Token));
            opened.Add(end.StatusCode == StatusCode.Cancelled ? StatusCode.OK : end.StatusCode);
        }

        Assert.Equal([StatusCode.OK, StatusCode.OK, StatusCode.ResourceExhausted], opened);
    }

    [Fact]
    public async Task ExpiredKey_IsUnauthenticated()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "expiry"));
        await SetUpAsync(engine);
        V1.CreatedKey key = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = ProgramA, Scope = V1.KeyScope.Reader, Name = "short", ExpiresAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddSeconds(1.5)),
        });
        var client = new V1.Access.AccessClient(engine.Channel.WithKey(key.Secret));
        await client.WhoAmIAsync(new V1.WhoAmIRequest());

        TimeSpan expired = await TimeUntilAsync(async () => await StatusAsync(client) == StatusCode.Unauthenticated);

        Assert.True(expired < TimeSpan.FromSeconds(3));
        RpcException e = await Assert.ThrowsAsync<RpcException>(() => client.WhoAmIAsync(new V1.WhoAmIRequest()).ResponseAsync);
        Assert.Equal("the key has expired", e.Status.Detail);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task SupportAndAdminCalls_AreInTheAuditTrail_WithTheirKeyAndOutcome(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "audit"));
        (string pos, string admin) = await SetUpAsync(engine);
        var access = new V1.Access.AccessClient(engine.Channel.WithKey(admin));
        V1.CreatedKey support = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Support, Name = "desk" });
        var staff = new V1.Members.MembersClient(engine.Channel.WithKey(support.Secret));
        await staff.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = ProgramA, MemberId = "m1", TransactionId = "adj-1", Points = 50, Reason = "goodwill" });
        await Assert.ThrowsAsync<RpcException>(() => staff.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = ProgramA, MemberId = "m1", TransactionId = "adj-2", Points = 50 }).ResponseAsync);
        await new V1.Purchases.PurchasesClient(engine.Channel.WithKey(pos)).AccrueAsync(Wire.Purchase(ProgramA, "m1", "t-audit", 10_00));

        V1.ListAuditResponse trail = await access.ListAuditAsync(new V1.ListAuditRequest { ProgramId = ProgramA });
        V1.ListAuditResponse page = await access.ListAuditAsync(new V1.ListAuditRequest { ProgramId = ProgramA, PageSize = 1, PageToken = trail.Records[0].Id.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        RpcException posReads = await Assert.ThrowsAsync<RpcException>(() =>
            new V1.Access.AccessClient(engine.Channel.WithKey(pos)).ListAuditAsync(new V1.ListAuditRequest { ProgramId = ProgramA }).ResponseAsync);

        Assert.Equal(
            [("/loyalty.v1.Members/AdjustPoints", "INVALID_ARGUMENT", support.Key.KeyId, "m1"), ("/loyalty.v1.Members/AdjustPoints", "OK", support.Key.KeyId, "m1")],
            trail.Records.Take(2).Select(r => (r.Method, r.Outcome, r.KeyId, r.Target)));
        Assert.Contains(trail.Records, r => r.Method == "/loyalty.v1.Access/CreateKey" && r.KeyId == KeyId(admin) && r.Outcome == "OK");
        Assert.Contains(trail.Records, r => r.Method == "/loyalty.v1.ProgramAdmin/PutProgram" && r.KeyId == KeyId(TestKeys.Operator));
        Assert.DoesNotContain(trail.Records, r => r.Method.EndsWith("/Accrue", StringComparison.Ordinal));
        Assert.Equal(trail.Records[1].Id, Assert.Single(page.Records).Id);
        Assert.Equal(StatusCode.PermissionDenied, posReads.StatusCode);
    }

    [Fact]
    public async Task Reflection_NeedsAKey()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "reflection"));
        byte[] listServices = [0x3A, 0x00];

        StatusCode without = await RawCalls.StreamStatusAsync(engine.Channel.CreateCallInvoker(), "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", listServices);
        StatusCode with = await RawCalls.StreamStatusAsync(engine.Invoker, "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", listServices);

        Assert.Equal(StatusCode.Unauthenticated, without);
        Assert.Equal(StatusCode.OK, with);
    }

    [Fact]
    public async Task Reflection_EachRequestOnAStream_CostsAUnaryCall()
    {
        (InProcessEngine engine, string reader) = await ThrottledReader.StartAsync("reflectionquota", ProgramA, burst: 3);
        await using InProcessEngine started = engine;
        var call = new Method<byte[], byte[]>(MethodType.DuplexStreaming, "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo",
            Marshallers.Create(b => b, b => b), Marshallers.Create(b => b, b => b));
        using AsyncDuplexStreamingCall<byte[], byte[]> stream = engine.Channel.WithKey(reader).AsyncDuplexStreamingCall(call, null, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)));
        byte[] listServices = [0x3A, 0x00];

        // The open costs one call of the burst of three; two requests are answered, the third is over.
        int answered = 0;
        RpcException over = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            for (int i = 0; i < 3; i++)
            {
                await stream.RequestStream.WriteAsync(listServices);
                Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));
                answered++;
            }
        });

        Assert.Equal(2, answered);
        Assert.Equal(StatusCode.ResourceExhausted, over.StatusCode);
    }

    [Fact]
    public async Task FirstStart_WritesAnOperatorKeyFile_AndALaterStartKeepsIt()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "bootstrap");
        string file = Path.Combine(TestDatabases.TempFolder(), "data", "operator.key");
        string[] args = ["--Auth:BootstrapOperatorKey=", $"--Auth:OperatorKeyFile={file}"];
        string key;
        await using (InProcessEngine first = await InProcessEngine.StartAsync(storage, null, args))
        {
            key = await File.ReadAllTextAsync(file);
            V1.ApiKey me = await new V1.Access.AccessClient(first.Channel.WithKey(key)).WhoAmIAsync(new V1.WhoAmIRequest());
            Assert.Equal((V1.KeyScope.Operator, "bootstrap"), (me.Scope, me.CreatedBy));
        }

        await using InProcessEngine second = await InProcessEngine.StartAsync(storage, null, args);
        Assert.Equal(key, await File.ReadAllTextAsync(file));
        Assert.Equal(V1.KeyScope.Operator, (await new V1.Access.AccessClient(second.Channel.WithKey(key)).WhoAmIAsync(new V1.WhoAmIRequest())).Scope);
    }

    /// <summary>Programs A and B, member m1 in both; a POS key and an admin key of A.</summary>
    private static async Task<(string Pos, string Admin)> SetUpAsync(InProcessEngine engine)
    {
        foreach (string program in new[] { ProgramA, ProgramB })
        {
            await engine.Programs.PutProgramAsync(Wire.Program(program));
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = program, MemberId = "m1" });
        }

        var access = new V1.Access.AccessClient(engine.Invoker);
        V1.CreatedKey pos = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Pos, Name = "tills" });
        V1.CreatedKey admin = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = ProgramA, Scope = V1.KeyScope.Admin, Name = "admin" });
        return (pos.Secret, admin.Secret);
    }

    /// <summary>A request that would change something if it were let through.</summary>
    private static Google.Protobuf.IMessage Valid(MethodDescriptor method) => method.Name switch
    {
        "PutProgram" => Wire.Program("evil", rate: 10_000),
        "AdjustPoints" => new V1.AdjustPointsRequest { ProgramId = ProgramA, MemberId = "m1", TransactionId = "evil", Points = 1_000_000_000, Reason = "x" },
        "Accrue" => Wire.Purchase(ProgramA, "m1", "evil-t", 10_00),
        "EraseMember" => new V1.EraseMemberRequest { ProgramId = ProgramA, MemberId = "m1", Reason = "x" },
        "CreateKey" => new V1.CreateKeyRequest { Scope = V1.KeyScope.Operator, Name = "evil" },
        _ => RawCalls.Request(method, ProgramA),
    };

    private static string KeyId(string token) => token.Substring(KeyTokens.Prefix.Length, KeyTokens.KeyIdLength);

    /// <summary>Calls with an authorization value as given, not necessarily a bearer key.</summary>
    private static CallInvoker RawKey(InProcessEngine engine, string authorization) =>
        Grpc.Core.Interceptors.CallInvokerExtensions.Intercept(engine.Channel.CreateCallInvoker(), metadata =>
        {
            metadata.Add("authorization", authorization);
            return metadata;
        });

    private static async Task<StatusCode> StatusAsync(V1.Access.AccessClient client)
    {
        try
        {
            await client.WhoAmIAsync(new V1.WhoAmIRequest());
            return StatusCode.OK;
        }
        catch (RpcException e)
        {
            return e.StatusCode;
        }
    }

    private static async Task<TimeSpan> TimeUntilAsync(Func<Task<bool>> condition)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!await condition() && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
        }

        return clock.Elapsed;
    }

    private static async Task<bool> StreamIsOpenAsync(AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream)
    {
        await stream.RequestStream.WriteAsync(Wire.Purchase(ProgramA, "m1", "q-open", 1_00));
        return (await ReadAsync(stream, 1))[0].Status == V1.AckStatus.Accepted;
    }

    private static async Task<List<V1.PurchaseAck>> ReadAsync(AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream, int count)
    {
        var acks = new List<V1.PurchaseAck>();
        while (acks.Count < count && await stream.ResponseStream.MoveNext(CancellationToken.None))
        {
            acks.Add(stream.ResponseStream.Current);
        }

        return acks;
    }
}
