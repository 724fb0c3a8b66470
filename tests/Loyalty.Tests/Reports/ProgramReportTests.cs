using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Api;
using Loyalty.Storage;
using Loyalty.Storage.Reports;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Reports;

/// <summary>
/// Programme reports against the ledger they summarise: a year of a small programme (sign-ups,
/// pending purchases, a campaign, a return, adjustments, redemptions, a merge, expiry) on both
/// databases, every figure checked against SQL run directly on the ledger and against the members.
/// </summary>
public sealed class ProgramReportTests(Xunit.Abstractions.ITestOutputHelper output)
{
    internal const string Program = "acct";
    private static readonly DateTimeOffset Start = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan DueWaitMax = TimeSpan.FromSeconds(20);
    private static readonly string[] MemberIds = ["a", "b", "c", "d"];

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task EveryFigure_EqualsTheSumOverTheLedger_AndTheMembers_AndARebuildGivesTheSameReport(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "report"), clock, "--Schedule:PollIntervalMs=50");
        var reports = new V1.Reports.ReportsClient(engine.Invoker);
        await PlayAYearAsync(engine, clock);

        var request = new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", GroupBy = V1.ReportGrouping.Month, Csv = true };
        V1.ProgramReport report = await reports.GetProgramReportAsync(request);
        V1.PointFlows total = report.Total.Flows;
        V1.ProgramBalances closing = report.Total.Closing;
        StorageOptions db = engine.Storage;
        output.WriteLine(report.Csv);

        Assert.Equal(await LedgerAsync(db, "SUM(points)", ""), total.Net);
        Assert.Equal(total.Net, closing.Outstanding);
        Assert.Equal(0, report.Opening.Outstanding);
        Assert.Equal(await LedgerAsync(db, "COUNT(*)", "AND kind = 1"), total.Enrolled);
        Assert.Equal(await LedgerAsync(db, "COUNT(*)", "AND kind = 2"), total.Purchases);
        Assert.Equal(await LedgerAsync(db, "SUM(amount_minor)", "AND kind = 2"), total.SalesMinor);
        Assert.Equal(await LedgerAsync(db, "COUNT(*)", "AND kind = 4"), total.Returns);
        Assert.Equal(await LedgerAsync(db, "SUM(points)", "AND kind = 5 AND points > 0"), total.IssuedAdjustments);
        Assert.Equal(await LedgerAsync(db, "-SUM(points)", "AND kind = 5 AND points < 0"), total.DeductedAdjustments);
        Assert.Equal(await LedgerAsync(db, "-SUM(points)", "AND kind = 7"), total.Redeemed);
        Assert.Equal(total.Redeemed, report.Total.RedeemedByReward.Sum(r => r.Points));
        Assert.Equal(await LedgerAsync(db, "-SUM(points)", $"AND kind = 7 AND {Json(backend, "reward_id", text: true)} = 'mug'"), Assert.Single(report.Total.RedeemedByReward, r => r.RewardId == "mug").Points);
        Assert.Equal((3, 3 * 4_50), Assert.Single(report.Total.RedeemedByReward, r => r.RewardId == "mug") is var mug ? (mug.Units, mug.ValueMinor) : default);
        V1.CauseDonations forests = Assert.Single(report.Total.Donations);
        Assert.Equal(("forests", 1, 2 * 1_00), (forests.Cause, forests.Donations, forests.AmountMinor));
        V1.RewardStock stock = Assert.Single(report.Stock);
        Assert.Equal(("tree", 5, 2, 3), (stock.RewardId, stock.Stock, stock.Taken, stock.Left));
        Assert.Equal(await LedgerAsync(db, "-SUM(points)", "AND kind = 10"), total.Expired);
        Assert.Equal(await LedgerAsync(db, "SUM(points)", "AND kind = 17"), total.MergedIn);
        Assert.Equal(await LedgerAsync(db, "-SUM(points)", "AND kind = 16"), total.MergedOut);
        Assert.Equal(await LedgerAsync(db, $"SUM({Json(backend, "pending_reversed")} + {Json(backend, "active_reversed")})", "AND kind = 4"), total.Reversed);
        Assert.Equal(await CampaignPointsAsync(db, backend), total.IssuedBonuses);
        Assert.Equal(await LedgerAsync(db, "SUM(points)", "AND kind = 1"), total.IssuedSignup);
        Assert.Equal(await LedgerAsync(db, "SUM(points)", "AND kind = 20"), total.IssuedFeedback);
        Assert.Equal(0, total.Other);

        // Members: a, b and c bought in November (a twice, on one day), a again in December.
        V1.MemberFigures november = report.Periods[0].Members, december = report.Periods[1].Members;
        Assert.Equal((3, 1, true), (november.Active, november.Repeat, november.ActiveExact));
        Assert.Equal(3_333, november.RepeatRateBp);
        // d was merged into b in November: three members remain, all of whom bought.
        Assert.Equal(10_000, november.ParticipationBp);
        Assert.Equal((1, 0), (december.Active, december.Repeat));
        Assert.Equal(await LedgerAsync(db, "COUNT(DISTINCT member_id)", "AND kind = 2"), report.Total.Members.FirstTimePurchases);
        Assert.Equal(230_00, report.Total.Members.FirstTimeSalesMinor);
        Assert.Equal(60_00, report.Total.Members.ReturningSalesMinor);
        Assert.Equal((total.SalesMinor - total.ReturnedMinor) / 3, report.Total.Members.LifetimeValueMinor);
        Assert.Equal(3, Assert.Single(report.Total.Members.Tiers).Members);

        // NPS: 10, 9 and 3 are two promoters and a detractor: (2 - 1) / 3.
        V1.NpsFigures nps = report.Total.Nps;
        Assert.Equal(await LedgerAsync(db, "COUNT(*)", "AND kind = 20"), nps.Responses);
        Assert.Equal((2, 0, 1), (nps.Promoters, nps.Passives, nps.Detractors));
        Assert.Equal(33.33, nps.Nps);

        // The story touched every figure it checks (a test of zeros proves nothing).
        Assert.All([total.IssuedBonuses, total.IssuedAdjustments, total.IssuedFeedback, total.DeductedAdjustments, total.Reversed, total.Redeemed, total.Expired,
            total.MergedIn, total.PendingAdded, total.PendingMatured, total.PendingReversed, total.ReturnedMinor], v => Assert.True(v > 0));

        // What the members hold is what the report says is outstanding.
        V1.Member[] members = [.. await Task.WhenAll(MemberIds.Select(async m => await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = m })))];
        Assert.Equal(members.Sum(m => m.Balance + m.PendingPoints), closing.Outstanding);
        Assert.Equal(members.Sum(m => m.PendingPoints), closing.Pending);
        Assert.Equal(3, closing.Members);
        Assert.Equal(3, await LedgerAsync(db, "COUNT(*)", "AND kind = 1") - await LedgerAsync(db, "COUNT(*)", "AND kind = 16"));

        // Accounting: four cents a point; breakage observed on lots that matured (all of them, a year on).
        Assert.Equal(closing.Outstanding * 4, closing.LiabilityMinor);
        Assert.True(closing.BreakageObserved);
        Assert.Equal(total.Expired, closing.MaturedExpired);
        Assert.Equal(total.Redeemed, closing.MaturedRedeemed);
        int breakage = (int)Math.Round(total.Expired * 10_000m / (total.Expired + total.Redeemed), MidpointRounding.AwayFromZero);
        Assert.Equal(breakage, closing.BreakageBp);
        Assert.Equal(10_000 - breakage, closing.RedemptionBp);
        Assert.Equal((long)Math.Round(closing.LiabilityMinor * (10_000 - breakage) / 10_000m, MidpointRounding.AwayFromZero), closing.DeferredRevenueMinor);

        // The periods add up to the whole, each closing where the next opens.
        // November 2026 to January 2028, the engine's today.
        Assert.Equal(15, report.Periods.Count);
        Assert.Equal(total.Net, report.Periods.Sum(p => p.Flows.Net));
        Assert.Equal(total.Issued, report.Periods.Sum(p => p.Flows.Issued));
        Assert.Equal(closing, report.Periods[^1].Closing);
        Assert.Equal(report.Periods.Count + 1, report.Csv.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

        // Rebuilt from the ledger alone, the totals give the same report.
        await RebuildAsync(db);
        Assert.Equal(report, await reports.GetProgramReportAsync(request));
    }

    [Fact]
    public async Task OneProgram_ComputesAtMostItsShareOfReportsAtOnce_OthersAreNotHeldBack()
    {
        StorageOptions db = TestDatabases.Create(Backend.Postgres, "reportgate");
        await using InProcessEngine engine = await InProcessEngine.StartAsync(db, new FakeTimeProvider(Start), "--Reports:ConcurrentPerProgramMax=2");
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Programs.PutProgramAsync(Wire.Program("other"));
        var reports = new V1.Reports.ReportsClient(engine.Invoker);
        Task<V1.ProgramReport> Report(string program) => reports.GetProgramReportAsync(new V1.ProgramReportRequest { ProgramId = program }).ResponseAsync;

        // The totals' table locked: every report under way waits in its read, holding its place.
        await using var locker = new Npgsql.NpgsqlConnection(db.ConnectionString);
        await locker.OpenAsync();
        await using Npgsql.NpgsqlTransaction locked = await locker.BeginTransactionAsync();
        await using (var lockTable = new Npgsql.NpgsqlCommand("LOCK TABLE report_totals IN ACCESS EXCLUSIVE MODE", locker, locked))
        {
            await lockTable.ExecuteNonQueryAsync();
        }

        Task<V1.ProgramReport>[] held = [Report(Program), Report(Program)];
        Task<V1.ProgramReport> others = Report("other");
        for (int i = 0; i < 100 && await Sql.ScalarAsync(db, "SELECT count(*) FROM pg_locks WHERE relation = 'report_totals'::regclass AND NOT granted") < 3; i++)
        {
            await Task.Delay(50);
        }

        RpcException third = await Assert.ThrowsAsync<RpcException>(() => Report(Program));
        await locked.CommitAsync();
        V1.ProgramReport[] done = await Task.WhenAll([.. held, others]);

        Assert.Equal(StatusCode.ResourceExhausted, third.StatusCode);
        Assert.Contains("Reports:ConcurrentPerProgramMax", third.Status.Detail, StringComparison.Ordinal);
        Assert.Equal([Program, Program, "other"], done.Select(r => r.ProgramId));
        Assert.Equal(Program, (await Report(Program)).ProgramId);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AMergedAwayMember_LeavesTheMemberCountAndItsTier_AndOlderTotalsAreRebuiltOnUpgrade(Backend backend)
    {
        StorageOptions db = TestDatabases.Create(backend, "reportmerge");
        var request = new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", To = "2026-11-30" };
        V1.ProgramReport before;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, new FakeTimeProvider(Start)))
        {
            await engine.Programs.PutProgramAsync(Wire.Program(Program));
            foreach (string member in (string[])["s", "dup", "x"])
            {
                await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member });
            }

            await engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = "s", DuplicateId = "dup", Reason = "same person" });
            before = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request);
        }

        // A database from before merged-away members left the count: migration 16 marks it for a rebuild.
        await Sql.ExecuteAsync(db, "DELETE FROM loyalty_schema_versions WHERE version = 16");
        await Sql.ExecuteAsync(db, $"DELETE FROM report_totals WHERE program_id = '{Program}' AND (metric = 41 OR metric = 71)");
        V1.ProgramReport upgraded;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, new FakeTimeProvider(Start)))
        {
            upgraded = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request);
        }

        Assert.Equal((2L, 2L), (before.Total.Closing.Members, Assert.Single(before.Total.Members.Tiers).Members));
        Assert.Equal(before, upgraded);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task TheRebuildCommand_RestoresLostTotalsFromTheLedger_AndRefusesABadProgramName(Backend backend)
    {
        StorageOptions db = TestDatabases.Create(backend, "rebuildcmd");
        var clock = new FakeTimeProvider(Start);
        var request = new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", GroupBy = V1.ReportGrouping.Month };
        V1.ProgramReport before;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock, "--Schedule:PollIntervalMs=50"))
        {
            await PlayAYearAsync(engine, clock);
            before = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request);
        }

        await Sql.ExecuteAsync(db, $"DELETE FROM report_totals WHERE program_id = '{Program}'");
        (int code, string said) = await RunCommandAsync(db, "rebuild-reports", Program);
        (int badCode, string badSaid) = await RunCommandAsync(db, "rebuild-reports", "no such/program");

        Assert.Equal(0, code);
        Assert.Contains("rebuilt the report totals of 1 programs", said, StringComparison.Ordinal);
        Assert.Equal(2, badCode);
        Assert.Contains("program", badSaid, StringComparison.Ordinal);
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock, "--Schedule:PollIntervalMs=50"))
        {
            Assert.Equal(before, await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request));
        }
    }

    [Fact]
    public async Task TheRebuild_ReadsEveryEntry_ThoughATransactionStartedBeforeThemIsStillOpenOnTheServer()
    {
        StorageOptions db = TestDatabases.Create(Backend.Postgres, "rebuildopen");
        var request = new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", To = "2026-11-30" };
        // A session left idle in a transaction that holds a transaction id (any session on the
        // server): the event stream holds back every entry committed after it began.
        await using var idle = new Npgsql.NpgsqlConnection(db.ConnectionString);
        await idle.OpenAsync();
        await using Npgsql.NpgsqlTransaction open = await idle.BeginTransactionAsync();
        await using (var command = new Npgsql.NpgsqlCommand("SELECT txid_current();", idle, open))
        {
            await command.ExecuteScalarAsync();
        }

        V1.ProgramReport before;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, new FakeTimeProvider(Start)))
        {
            await engine.Programs.PutProgramAsync(Wire.Program(Program));
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "a" });
            await engine.Purchases.AccrueAsync(Purchase("a", "p1", 25_00));
            before = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request);
        }

        await Sql.ExecuteAsync(db, $"DELETE FROM report_totals WHERE program_id = '{Program}'");
        await RebuildAsync(db);
        await open.RollbackAsync();
        V1.ProgramReport rebuilt;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, new FakeTimeProvider(Start)))
        {
            rebuilt = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(request);
        }

        Assert.Equal((1L, 25_00L), (before.Total.Flows.Purchases, before.Total.Flows.SalesMinor));
        Assert.Equal(before, rebuilt);
    }

    /// <summary>Runs the engine's binary with a command and the database's settings; its exit code and output.</summary>
    private static async Task<(int Code, string Output)> RunCommandAsync(StorageOptions db, params string[] command)
    {
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in (string[])[HostProcess.HostAssemblyPath(), .. command, $"--Storage:Provider={db.Provider}", $"--Storage:ConnectionString={db.ConnectionString}"])
        {
            start.ArgumentList.Add(arg);
        }

        using System.Diagnostics.Process process = System.Diagnostics.Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> errors = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(limit.Token);
        return (process.ExitCode, await output + await errors);
    }

    [Fact]
    public async Task ABadPeriod_AnUnknownProgram_AndATillKey_AreRefused_WithTheReason()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "reportbad"));
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        var reports = new V1.Reports.ReportsClient(engine.Invoker);
        string till = (await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Pos, Name = "till" })).Secret;

        async Task<RpcException> Refused(V1.ProgramReportRequest request, V1.Reports.ReportsClient? client = null) =>
            await Assert.ThrowsAsync<RpcException>(() => (client ?? reports).GetProgramReportAsync(request).ResponseAsync);

        RpcException day = await Refused(new() { ProgramId = Program, From = "1 Nov 2026" });
        RpcException order = await Refused(new() { ProgramId = Program, From = "2026-11-02", To = "2026-11-01" });
        RpcException periods = await Refused(new() { ProgramId = Program, From = "2020-01-01", To = "2026-11-01", GroupBy = V1.ReportGrouping.Day });
        RpcException unknown = await Refused(new() { ProgramId = "nope" });
        RpcException pos = await Refused(new() { ProgramId = Program }, new V1.Reports.ReportsClient(engine.Channel.WithKey(till)));

        Assert.Equal(StatusCode.InvalidArgument, day.StatusCode);
        Assert.Contains("YYYY-MM-DD", day.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, order.StatusCode);
        Assert.Contains("after", order.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, periods.StatusCode);
        Assert.Contains("group by a longer period", periods.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(StatusCode.PermissionDenied, pos.StatusCode);
    }

    [Fact]
    public async Task Feedback_IsIdempotentByItsId_RefusesBadScores_AndItsCommentIsErasedWithTheMember()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "feedback"));
        V1.PutProgramRequest program = Wire.Program(Program);
        program.Settings.FeedbackRewardPoints = 7;
        await engine.Programs.PutProgramAsync(program);
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        var answer = new V1.RecordFeedbackRequest { ProgramId = Program, MemberId = "m", FeedbackId = "s1", Score = 8, Comment = "friendly staff", Channel = "app" };

        V1.AdjustPointsResponse first = await engine.Members.RecordFeedbackAsync(answer);
        V1.AdjustPointsResponse again = await engine.Members.RecordFeedbackAsync(answer);
        RpcException changed = await Assert.ThrowsAsync<RpcException>(() => engine.Members.RecordFeedbackAsync(new V1.RecordFeedbackRequest(answer) { Score = 2 }).ResponseAsync);
        RpcException score = await Assert.ThrowsAsync<RpcException>(() => engine.Members.RecordFeedbackAsync(new V1.RecordFeedbackRequest(answer) { FeedbackId = "s2", Score = 11 }).ResponseAsync);
        RpcException stranger = await Assert.ThrowsAsync<RpcException>(() => engine.Members.RecordFeedbackAsync(new V1.RecordFeedbackRequest(answer) { MemberId = "nobody" }).ResponseAsync);
        string before = (await Sql.RowsAsync(engine.Storage, $"SELECT reason FROM ledger_entries WHERE program_id = '{Program}' AND kind = 20", r => r.GetString(0))).Single();
        await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "m", Reason = "ticket 7" });

        Assert.Equal((V1.AckStatus.Accepted, 7, 7), (first.Status, first.Points, first.Balance));
        Assert.Equal(V1.AckStatus.Duplicate, again.Status);
        Assert.Equal(StatusCode.AlreadyExists, changed.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, score.StatusCode);
        Assert.Contains("score", score.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.NotFound, stranger.StatusCode);
        Assert.Equal("friendly staff", before);
        Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND kind = 20 AND reason IS NOT NULL"));
        Assert.Equal(1, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND kind = 20"));
    }

    /// <summary>
    /// Sign-ups, pending purchases under a double-points campaign, a return inside the pending
    /// window, adjustments both ways, a redemption, a merge; then the pending points mature, one
    /// more redemption, and a year later every lot left expires.
    /// </summary>
    internal static async Task PlayAYearAsync(InProcessEngine engine, FakeTimeProvider clock)
    {
        V1.PutProgramRequest program = Wire.Program(Program);
        program.Settings.SignupBonusPoints = 50;
        program.Settings.FeedbackRewardPoints = 5;
        program.Settings.PendingDays = 7;
        program.Settings.Expiry = new V1.ExpiryPolicy { Mode = V1.ExpiryMode.Lifespan, LifespanMonths = 12 };
        program.Settings.Accounting = new V1.AccountingPolicy { PointValueMinorPerThousand = 4_000, ExpectedBreakageBp = 1_500 };
        program.Settings.Rewards.Add(new V1.Reward { Id = "mug", Name = "Mug", Kind = V1.RewardKind.Product, Sku = "mug", PointsPrice = 30, ValueMinor = 4_50 });
        program.Settings.Rewards.Add(new V1.Reward { Id = "tree", Name = "Plant a tree", Kind = V1.RewardKind.Donation, Cause = "forests", PointsPrice = 10, ValueMinor = 1_00, Stock = 5 });
        program.Settings.Campaigns.Add(new V1.Campaign
        {
            Id = "double", Name = "Double points", MultiplierBp = 20_000,
            StartsAt = Timestamp.FromDateTimeOffset(Start.AddMonths(-2)), EndsAt = Timestamp.FromDateTimeOffset(Start.AddMonths(2)),
        });
        await engine.Programs.PutProgramAsync(program);
        foreach (string member in MemberIds)
        {
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member });
        }

        await engine.Purchases.AccrueAsync(Purchase("a", "a1", 100_00));
        await engine.Purchases.AccrueAsync(Purchase("a", "a2", 40_00));
        await engine.Purchases.AccrueAsync(Purchase("b", "b1", 50_00));
        await engine.Purchases.AccrueAsync(Purchase("c", "c1", 80_00));
        await engine.Purchases.ReturnAsync(new V1.ReturnRequest
        {
            TransactionId = "r1", ProgramId = Program, MemberId = "a", OriginalTransactionId = "a1", StoreId = "store-1",
            AmountMinor = 40_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(clock.GetUtcNow()),
        });
        await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = Program, MemberId = "b", TransactionId = "adj1", Points = 25, Reason = "goodwill" });
        await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = Program, MemberId = "c", TransactionId = "adj2", Points = -10, Reason = "correction" });
        var redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
        await redemptions.RedeemAsync(new V1.RedeemRequest { TransactionId = "red1", ProgramId = Program, MemberId = "d", RewardId = "mug", Quantity = 1, StoreId = "store-1" });
        await engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = "b", DuplicateId = "d", Reason = "same person" });
        await redemptions.RedeemAsync(new V1.RedeemRequest { TransactionId = "tree1", ProgramId = Program, MemberId = "c", RewardId = "tree", Quantity = 2, StoreId = "store-1" });
        foreach ((string member, int score) in new[] { ("a", 10), ("b", 9), ("c", 3) })
        {
            await engine.Members.RecordFeedbackAsync(new V1.RecordFeedbackRequest { ProgramId = Program, MemberId = member, FeedbackId = "nps-" + member, Score = score, Comment = "comment of " + member, Channel = "email" });
        }

        clock.Advance(TimeSpan.FromDays(8));
        await engine.Purchases.AccrueAsync(Purchase("a", "a3", 20_00));
        await redemptions.RedeemAsync(new V1.RedeemRequest { TransactionId = "red2", ProgramId = Program, MemberId = "a", RewardId = "mug", Quantity = 2, StoreId = "store-1" });

        clock.Advance(TimeSpan.FromDays(400));
        DateTime until = DateTime.UtcNow + DueWaitMax;
        while (await LedgerAsync(engine.Storage, "SUM(points)", "") != 0)
        {
            Assert.True(DateTime.UtcNow < until, "the lots left did not expire in time");
            await Task.Delay(100);
        }
    }

    private static V1.Purchase Purchase(string member, string txn, long amountMinor)
    {
        V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(Start.AddHours(-1));
        return purchase;
    }

    private static Task<long> LedgerAsync(StorageOptions db, string aggregate, string where) =>
        Sql.ScalarAsync(db, $"SELECT COALESCE({aggregate}, 0) FROM ledger_entries WHERE program_id = '{Program}' {where}");

    private static string Json(Backend backend, string field, bool text = false) => (backend, text) switch
    {
        (Backend.Postgres, false) => $"COALESCE((details::jsonb ->> '{field}')::bigint, 0)",
        (Backend.Postgres, true) => $"(details::jsonb ->> '{field}')",
        (_, false) => $"COALESCE(json_extract(details, '$.{field}'), 0)",
        _ => $"json_extract(details, '$.{field}')",
    };

    private static Task<long> CampaignPointsAsync(StorageOptions db, Backend backend) => Sql.ScalarAsync(db, backend == Backend.Postgres
        ? $"SELECT COALESCE(SUM((c ->> 'points')::bigint), 0) FROM ledger_entries, jsonb_array_elements(details::jsonb -> 'components') c " +
          $"WHERE program_id = '{Program}' AND kind = 2 AND c ->> 'kind' = 'Campaign'"
        : $"SELECT COALESCE(SUM(json_extract(c.value, '$.points')), 0) FROM ledger_entries, json_each(ledger_entries.details, '$.components') c " +
          $"WHERE program_id = '{Program}' AND kind = 2 AND json_extract(c.value, '$.kind') = 'Campaign'");

    private static async Task RebuildAsync(StorageOptions db)
    {
        if (db.Provider == StorageProvider.Postgres)
        {
            await using var store = new PostgresLedgerStore(db.ConnectionString);
            await store.MarkTotalsForRebuildAsync(Program, CancellationToken.None);
            Assert.Equal((1, await LedgerAsync(db, "COUNT(*)", "")), await ReportRebuild.RunDueAsync(store, CancellationToken.None));
        }
        else
        {
            using var store = new SqliteLedgerStore(db.ConnectionString);
            await store.MarkTotalsForRebuildAsync(Program, CancellationToken.None);
            Assert.Equal((1, await LedgerAsync(db, "COUNT(*)", "")), await ReportRebuild.RunDueAsync(store, CancellationToken.None));
        }
    }
}
