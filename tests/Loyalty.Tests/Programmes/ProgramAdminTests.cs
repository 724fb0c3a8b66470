using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// What admins and support staff change: a program under an expected version (two admins at once),
/// flags added and removed against those held (two clients at once), one meaning of a multiplier
/// left at 0, and the tier progress a member sees; on both databases, over gRPC.
/// </summary>
public sealed class ProgramAdminTests
{
    private const string Program = "admin";
    private static readonly DateTimeOffset Start = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task PutProgram_ChangingTheCurrency_IsTakenWhileTheProgramHasNoEntries_AndRefusedOnceItHas(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-currency"));
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        V1.PutProgramRequest yen = Wire.Program(Program);
        yen.Settings.Currency = "JPY";
        yen.Settings.CurrencyExponent = 0;

        V1.Program beforeEntries = await engine.Programs.PutProgramAsync(yen);
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        RpcException refused = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(yen).ResponseAsync);
        V1.PutProgramRequest renamed = Wire.Program(Program);
        renamed.Settings.Name = "Renamed";
        V1.Program otherChange = await engine.Programs.PutProgramAsync(renamed);

        Assert.Equal("JPY", beforeEntries.Settings.Currency);
        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.StartsWith("currency cannot change from USD (exponent 2) to JPY (exponent 0) once the program has ledger entries", refused.Status.Detail, StringComparison.Ordinal);
        Assert.EndsWith("; nothing was changed", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(("USD", "Renamed"), (otherChange.Settings.Currency, otherChange.Settings.Name));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task PutProgram_UnderAStaleExpectedVersion_IsRefused_AndOfTwoAdminsAtOnceExactlyOneWins(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-version"));
        V1.PutProgramRequest create = Wire.Program(Program);
        create.ExpectedVersion = 0;

        V1.Program created = await engine.Programs.PutProgramAsync(create);
        RpcException again = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(create).ResponseAsync);
        V1.PutProgramRequest missing = Wire.Program("nobody");
        missing.ExpectedVersion = 3;
        RpcException notThere = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(missing).ResponseAsync);
        create.ExpectedVersion = -1;
        RpcException negative = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(create).ResponseAsync);

        Assert.Equal(1, created.Version);
        Assert.Equal((StatusCode.FailedPrecondition, true), (again.StatusCode, again.Status.Detail.Contains("is at version 1", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.FailedPrecondition, true), (notThere.StatusCode, notThere.Status.Detail.Contains("does not exist", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.InvalidArgument, true), (negative.StatusCode, negative.Status.Detail.Contains("expected_version", StringComparison.Ordinal)));
        Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(() => engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = "nobody" }).ResponseAsync)).StatusCode);

        // Two admins read version v and each saves an edit of it at the same moment, 20 times.
        const int rounds = 20;
        for (int round = 0; round < rounds; round++)
        {
            long version = (await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = Program })).Version;
            V1.PutProgramRequest first = Edit(version, $"first {round}"), second = Edit(version, $"second {round}");

            Task<V1.Program>[] both = [engine.Programs.PutProgramAsync(first).ResponseAsync, engine.Programs.PutProgramAsync(second).ResponseAsync];
            await Task.WhenAll(both.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));

            Task<V1.Program> won = Assert.Single(both, t => t.IsCompletedSuccessfully);
            RpcException lost = Assert.IsType<RpcException>(Assert.Single(both, t => t.IsFaulted).Exception!.InnerException);
            Assert.Equal(StatusCode.FailedPrecondition, lost.StatusCode);
            V1.Program now = await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = Program });
            Assert.Equal((version + 1, (await won).Settings.Name), (now.Version, now.Settings.Name));
        }

        // Without an expected version a put always applies, as before.
        V1.Program unconditional = await engine.Programs.PutProgramAsync(Wire.Program(Program));
        Assert.Equal(2 + rounds, unconditional.Version);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Flags_AddedAndRemovedAtOnce_AllTakeEffect_AndMalformedOrTooManyAreRefused(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-flags"));
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "f" });
        await engine.Members.SetMemberFlagsAsync(Flags(replace: ["keep", "drop-1", "drop-2"]));

        // Ten clients each add their own flag and two remove one each, all at once: every edit counts.
        await Task.WhenAll([
            .. Enumerable.Range(0, 10).Select(i => engine.Members.SetMemberFlagsAsync(Flags(add: [$"add-{i}"])).ResponseAsync),
            engine.Members.SetMemberFlagsAsync(Flags(remove: ["drop-1"])).ResponseAsync,
            engine.Members.SetMemberFlagsAsync(Flags(remove: ["drop-2", "never-held"])).ResponseAsync]);
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "f" });
        V1.Member unchanged = await engine.Members.SetMemberFlagsAsync(Flags(add: ["keep"]));

        string[] expected = [.. Enumerable.Range(0, 10).Select(i => $"add-{i}").Append("keep").Order(StringComparer.Ordinal)];
        Assert.Equal(expected, member.Flags);
        Assert.Equal(member.LastSequence, unchanged.LastSequence);
        Assert.Equal(13, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'f' AND kind = 6"));

        RpcException mixed = await RefusedAsync(engine, Flags(replace: ["a"], add: ["b"]));
        RpcException both = await RefusedAsync(engine, Flags(add: ["x"], remove: ["x"]));
        RpcException malformed = await RefusedAsync(engine, Flags(add: ["not a flag"]));
        RpcException tooMany = await RefusedAsync(engine, Flags(add: [.. Enumerable.Range(0, 22).Select(i => $"more-{i}")]));
        V1.Member after = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "f" });

        Assert.Equal((StatusCode.InvalidArgument, true), (mixed.StatusCode, mixed.Status.Detail.Contains("add_flags", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.InvalidArgument, true), (both.StatusCode, both.Status.Detail.Contains("'x' is in both", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.InvalidArgument, true), (malformed.StatusCode, malformed.Status.Detail.Contains("add_flags[0]", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.FailedPrecondition, true), (tooMany.StatusCode, tooMany.Status.Detail.Contains("would hold 33 flags", StringComparison.Ordinal)));
        Assert.Equal(member.LastSequence, after.LastSequence);
        Assert.Equal(expected, after.Flags);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AMultiplierLeftAtZero_MeansX1_OnEveryRule_AndACampaignThatGivesNothingIsRefused(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-multipliers"));
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.ProductRules.Add(new V1.ProductRule { Sku = "sku-1" });
        request.Settings.FlagRules.Add(new V1.FlagRule { Flag = "storecard" });
        request.Settings.Tiers = new V1.TierLadder { WindowDays = 365, Tiers = { new V1.Tier { Name = "base" }, new V1.Tier { Name = "gold", Threshold = 1_000 } } };
        request.Settings.Campaigns.Add(new V1.Campaign
        {
            Id = "bonus",
            StartsAt = Timestamp.FromDateTimeOffset(Start.AddYears(-1)),
            EndsAt = Timestamp.FromDateTimeOffset(Start.AddYears(1)),
            BonusPoints = 5,
        });

        V1.Program program = await engine.Programs.PutProgramAsync(request);
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "x1" });
        await engine.Members.SetMemberFlagsAsync(Flags(replace: ["storecard"], member: "x1"));
        V1.PurchaseAck ack = await engine.Purchases.AccrueAsync(Wire.Purchase(Program, "x1", "x1-1", 20_00));
        request.Settings.Campaigns[0].BonusPoints = 0;
        RpcException nothing = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(request).ResponseAsync);

        Assert.Equal(10_000, program.Settings.ProductRules[0].MultiplierBp);
        Assert.Equal(10_000, program.Settings.FlagRules[0].MultiplierBp);
        Assert.All(program.Settings.Tiers.Tiers, t => Assert.Equal(10_000, t.MultiplierBp));
        Assert.Equal(10_000, program.Settings.Campaigns[0].MultiplierBp);
        Assert.Equal(20 + 5, ack.PointsEarned);
        Assert.Equal((StatusCode.InvalidArgument, true), (nothing.StatusCode, nothing.Status.Detail.Contains("campaigns[0] gives nothing", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData(Backend.Sqlite, V1.TierBasis.Points)]
    [InlineData(Backend.Postgres, V1.TierBasis.Spend)]
    public async Task GetMember_ShowsWhatTheNextTierStillNeeds_AndWhatKeepingTheTierNeedsByTheReview(Backend backend, V1.TierBasis basis)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-progress"), clock);
        V1.PutProgramRequest request = Wire.Program(Program);
        long unit = basis == V1.TierBasis.Points ? 1 : 100;
        request.Settings.Tiers = new V1.TierLadder
        {
            Basis = basis,
            WindowDays = 365,
            GraceDays = 30,
            Tiers = { new V1.Tier { Name = "member" }, new V1.Tier { Name = "silver", Threshold = 100 * unit }, new V1.Tier { Name = "gold", Threshold = 500 * unit } },
        };
        await engine.Programs.PutProgramAsync(request);
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "t" });
        var get = new V1.GetMemberRequest { ProgramId = Program, MemberId = "t" };

        await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "t", "t-1", 60_00), Start));
        V1.TierProgress belowSilver = (await engine.Members.GetMemberAsync(get)).TierProgress;
        await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "t", "t-2", 50_00), Start));
        V1.Member silver = await engine.Members.GetMemberAsync(get);
        clock.Advance(TimeSpan.FromDays(200));
        await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "t", "t-3", 30_00), clock.GetUtcNow()));
        V1.TierProgress later = (await engine.Members.GetMemberAsync(get)).TierProgress;

        Assert.Equal((basis, "silver", 100 * unit, 40 * unit), (belowSilver.Basis, belowSilver.NextTier, belowSilver.NextThreshold, belowSilver.ToNextTier));
        Assert.Null(belowSilver.KeepTierBy);
        Assert.Equal("silver", silver.Tier);
        Assert.Equal(("gold", 390 * unit), (silver.TierProgress.NextTier, silver.TierProgress.ToNextTier));
        Assert.Equal(Start.AddDays(365 + 30), silver.TierProgress.KeepTierBy.ToDateTimeOffset());

        // By the review, the first two purchases have left the window: only the third still counts.
        Assert.Equal(100 * unit, silver.TierProgress.ToKeepTier);
        Assert.Equal((360 * unit, 70 * unit), (later.ToNextTier, later.ToKeepTier));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ATierDroppedFromTheLadder_IsRefusedUnlessMapped_AndItsMembersKeepTheirTierUnderTheNewName(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "admin-renames"), clock);
        await engine.Programs.PutProgramAsync(WithTiers("member", "silver", "gold"));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "g" });
        var get = new V1.GetMemberRequest { ProgramId = Program, MemberId = "g" };
        await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "g", "g-1", 600_00), Start));
        long atGold = (await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "g", "g-2", 10_00), Start))).PointsEarned;
        long version = (await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = Program })).Version;

        V1.PutProgramRequest renamed = WithTiers("member", "silver", "Gold");
        RpcException refused = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(renamed).ResponseAsync);
        string tierAfterRefusal = (await engine.Members.GetMemberAsync(get)).Tier;
        renamed.Settings.Tiers.Renamed["gold"] = "Gold";
        V1.Program put = await engine.Programs.PutProgramAsync(renamed);
        V1.Member member = await engine.Members.GetMemberAsync(get);
        long atGoldRenamed = (await engine.Purchases.AccrueAsync(At(Wire.Purchase(Program, "g", "g-3", 10_00), Start))).PointsEarned;
        // A later change that leaves the old name out keeps it; one that makes it a tier again is refused.
        V1.Program later = await engine.Programs.PutProgramAsync(WithTiers("member", "silver", "Gold"));
        RpcException reused = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(WithTiers("member", "silver", "Gold", "gold")).ResponseAsync);
        V1.PutProgramRequest lounge = WithTiers("member", "silver", "Gold");
        lounge.Settings.Rewards.Add(new V1.Reward { Id = "lounge", Name = "Lounge", Kind = V1.RewardKind.Product, Sku = "lounge", PointsPrice = 30, Tiers = { "gold" } });
        RpcException oldName = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(lounge).ResponseAsync);
        V1.PutProgramRequest fresh = WithTiers("member", "silver", "Gold");
        fresh.ProgramId = "fresh";
        fresh.Settings.Tiers.Renamed["gold"] = "Gold";
        RpcException nothingToRename = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(fresh).ResponseAsync);
        V1.ProgramReport report = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(
            new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", To = "2026-11-30", GroupBy = V1.ReportGrouping.Month });

        // Before, the put was taken and the member fell to "member" (earning at x1) without an entry.
        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.StartsWith("tiers: tier 'gold' is not in the new ladder", refused.Status.Detail, StringComparison.Ordinal);
        Assert.EndsWith("; nothing was changed", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("gold", tierAfterRefusal);
        Assert.Equal(version + 1, put.Version);
        Assert.Equal("Gold", member.Tier);
        Assert.True(atGold > 10, $"the gold multiplier gave {atGold} points for 10.00");
        Assert.Equal(atGold, atGoldRenamed);
        Assert.Equal("Gold", later.Settings.Tiers.Renamed["gold"]);
        Assert.Equal(StatusCode.FailedPrecondition, reused.StatusCode);
        Assert.Contains("members may still hold it by that name", reused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal((StatusCode.FailedPrecondition, "rewards[0].tiers: tier 'gold' is now 'Gold'; nothing was changed"), (oldName.StatusCode, oldName.Status.Detail));
        Assert.Equal(version + 2, (await engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = Program })).Version);
        Assert.Equal((StatusCode.FailedPrecondition, "tiers.renamed: program 'fresh' is new; it has no old tier names to map; nothing was changed"), (nothingToRename.StatusCode, nothingToRename.Status.Detail));
        // The member entered "gold" before the rename: the report counts it under "Gold", one row per tier.
        Assert.Equal(["member:0", "silver:0", "Gold:1"], report.Total.Members.Tiers.Select(t => $"{t.Tier}:{t.Members}"));
    }

    /// <summary>The program with a points ladder of these tiers, 0 / 100 / 500 / 1000 points, the top ones earning double.</summary>
    private static V1.PutProgramRequest WithTiers(params string[] names)
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.Tiers = new V1.TierLadder { Basis = V1.TierBasis.Points, WindowDays = 365, GraceDays = 30 };
        long[] thresholds = [0, 100, 500, 1_000];
        request.Settings.Tiers.Tiers.AddRange(names.Select((n, i) => new V1.Tier { Name = n, Threshold = thresholds[i], MultiplierBp = i >= 2 ? 20_000 : 0 }));
        return request;
    }

    private static V1.PutProgramRequest Edit(long version, string name)
    {
        V1.PutProgramRequest edit = Wire.Program(Program);
        edit.Settings.Name = name;
        edit.ExpectedVersion = version;
        return edit;
    }

    private static V1.SetMemberFlagsRequest Flags(string[]? replace = null, string[]? add = null, string[]? remove = null, string member = "f") => new()
    {
        ProgramId = Program,
        MemberId = member,
        Flags = { replace ?? [] },
        AddFlags = { add ?? [] },
        RemoveFlags = { remove ?? [] },
    };

    private static V1.Purchase At(V1.Purchase purchase, DateTimeOffset at)
    {
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(at);
        return purchase;
    }

    private static async Task<RpcException> RefusedAsync(InProcessEngine engine, V1.SetMemberFlagsRequest request) =>
        await Assert.ThrowsAsync<RpcException>(() => engine.Members.SetMemberFlagsAsync(request).ResponseAsync);
}
