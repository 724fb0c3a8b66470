using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Trade-in credit and the store-credit wallet over gRPC on both databases: items wait for
/// inspection, the table sets the credit, the wallet pays part of a purchase and gets it back with a
/// return, reports carry the wallet's liability (checked against the ledger), and members rebuild
/// from the ledger.
/// </summary>
public sealed class TradeInTests
{
    private const string Program = "wornwear";
    private static readonly DateTimeOffset Start = new(2026, 12, 1, 18, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AcceptedTradeIns_FillTheWallet_WhichPaysAtTheTill_AndReturnsRefundIt(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "trade-in"), clock);
        try
        {
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "w" });

            V1.TradeInResponse submitted = await SubmitAsync(engine, "t1", "jackets");
            V1.TradeInResponse resubmitted = await SubmitAsync(engine, "t1", "jackets");
            RpcException reused = await RefusedAsync(SubmitAsync(engine, "t1", "fleece"));
            RpcException unknownCategory = await RefusedAsync(SubmitAsync(engine, "t9", "shoes"));
            V1.Member waiting = await MemberAsync(engine);
            V1.TradeInResponse accepted = await InspectAsync(engine, "t1", V1.TradeInCondition.Good);
            V1.TradeInResponse again = await InspectAsync(engine, "t1", V1.TradeInCondition.Good);
            RpcException regraded = await RefusedAsync(InspectAsync(engine, "t1", V1.TradeInCondition.Worn));
            RpcException unknown = await RefusedAsync(InspectAsync(engine, "t8", V1.TradeInCondition.Good));
            await SubmitAsync(engine, "t2", "fleece");
            V1.TradeInResponse rejected = await InspectAsync(engine, "t2", V1.TradeInCondition.Rejected);

            Assert.Equal((V1.TradeInStatus.Pending, V1.AckStatus.Accepted), (submitted.TradeInStatus, submitted.Status));
            Assert.Equal((V1.AckStatus.Duplicate, submitted.Sequence), (resubmitted.Status, resubmitted.Sequence));
            Assert.Equal(StatusCode.AlreadyExists, reused.StatusCode);
            Assert.Equal((StatusCode.FailedPrecondition, true), (unknownCategory.StatusCode, unknownCategory.Status.Detail.Contains("'shoes'", StringComparison.Ordinal)));
            Assert.Equal(("t1", "jackets"), (Assert.Single(waiting.TradeIns).TradeInId, waiting.TradeIns[0].Category));
            Assert.Equal((V1.TradeInStatus.Accepted, 30_00L, 30_00L), (accepted.TradeInStatus, accepted.CreditMinor, accepted.WalletMinor));
            Assert.Equal((V1.AckStatus.Duplicate, accepted.Sequence), (again.Status, again.Sequence));
            Assert.Equal((StatusCode.FailedPrecondition, true), (regraded.StatusCode, regraded.Status.Detail.Contains("already inspected as Good", StringComparison.Ordinal)));
            Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
            Assert.Equal((V1.TradeInStatus.Rejected, 0L, 30_00L), (rejected.TradeInStatus, rejected.CreditMinor, rejected.WalletMinor));

            // A submission resent after its inspection says how it was graded, under its own sequence.
            V1.TradeInResponse resentAccepted = await SubmitAsync(engine, "t1", "jackets");
            V1.TradeInResponse resentRejected = await SubmitAsync(engine, "t2", "fleece");
            Assert.Equal((V1.AckStatus.Duplicate, V1.TradeInStatus.Accepted, 30_00L, V1.TradeInCondition.Good, submitted.Sequence),
                (resentAccepted.Status, resentAccepted.TradeInStatus, resentAccepted.CreditMinor, resentAccepted.Condition, resentAccepted.Sequence));
            Assert.Equal((V1.AckStatus.Duplicate, V1.TradeInStatus.Rejected, 0L), (resentRejected.Status, resentRejected.TradeInStatus, resentRejected.CreditMinor));

            // The wallet pays $25 of a $100 purchase, which still earns on its whole amount.
            V1.PurchaseAck paid = await engine.Purchases.AccrueAsync(Buy("p1", 100_00, walletMinor: 25_00));
            RpcException overdrawn = await RefusedAsync(engine.Purchases.AccrueAsync(Buy("p2", 100_00, walletMinor: 5_01)).ResponseAsync);
            V1.ReturnAck part = await engine.Purchases.ReturnAsync(Return("r1", 40_00));
            long afterPart = (await MemberAsync(engine)).WalletMinor;
            await engine.Purchases.ReturnAsync(Return("r2", 60_00));
            V1.Member member = await MemberAsync(engine);
            // A survey answer in the same programme: its figures are counted apart from store credit's.
            await engine.Members.RecordFeedbackAsync(new V1.RecordFeedbackRequest { ProgramId = Program, MemberId = "w", FeedbackId = "nps-1", Score = 10, Channel = "app" });

            Assert.Equal((100, -25_00L), (paid.PointsEarned, paid.Breakdown.WalletMinor));
            Assert.Equal((StatusCode.FailedPrecondition, true), (overdrawn.StatusCode, overdrawn.Status.Detail.Contains("has 500 minor units of store credit", StringComparison.Ordinal)));
            Assert.Equal(10_00L, part.Breakdown.WalletMinor);
            Assert.Equal(15_00L, afterPart);
            Assert.Equal(30_00L, member.WalletMinor);
            Assert.Empty(member.TradeIns);

            // The report's store credit is the ledger's, and its closing liability the members' wallets.
            V1.ProgramReport report = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(
                new V1.ProgramReportRequest { ProgramId = Program, From = "2026-12-01", GroupBy = V1.ReportGrouping.Month, Csv = true });
            Assert.Equal((30_00L, 25_00L, 25_00L), (report.Total.StoreCredit.IssuedMinor, report.Total.StoreCredit.SpentMinor, report.Total.StoreCredit.RefundedMinor));
            Assert.Equal(member.WalletMinor, report.Total.Closing.StoreCreditMinor);
            Assert.Equal((1L, 1L, 0L, 0L), (report.Total.Nps.Responses, report.Total.Nps.Promoters, report.Total.Nps.Passives, report.Total.Nps.Detractors));
            Assert.Equal(member.WalletMinor, await LedgerWalletAsync(engine, backend));
            Assert.EndsWith(",3000,2500,2500,3000", report.Csv.Split('\n', StringSplitOptions.RemoveEmptyEntries)[1], StringComparison.Ordinal);

            // A database from before store credit had its own codes: its totals under 90-92 mixed
            // both figures. Migration 14 has them rebuilt from the ledger when the engine starts.
            await engine.DisposeAsync();
            await Sql.ExecuteAsync(engine.Storage, "DELETE FROM loyalty_schema_versions WHERE version = 14");
            await Sql.ExecuteAsync(engine.Storage, "UPDATE report_totals SET value = value + 3000 WHERE metric = 90");
            engine = await InProcessEngine.StartAsync(engine.Storage, clock);
            V1.ProgramReport migrated = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(
                new V1.ProgramReportRequest { ProgramId = Program, From = "2026-12-01", GroupBy = V1.ReportGrouping.Month, Csv = true });
            Assert.Equal(report, migrated);

            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "w");

            // Past the member's memory of recent ids (a restart), the ledger answers the same.
            await engine.DisposeAsync();
            engine = await InProcessEngine.StartAsync(engine.Storage, clock);
            V1.TradeInResponse resentAfterRestart = await SubmitAsync(engine, "t1", "jackets");
            Assert.Equal((V1.AckStatus.Duplicate, V1.TradeInStatus.Accepted, 30_00L, submitted.Sequence),
                (resentAfterRestart.Status, resentAfterRestart.TradeInStatus, resentAfterRestart.CreditMinor, resentAfterRestart.Sequence));
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task APurchasePaidWithStoreCredit_ResentAfterTheMemberForgotIt_IsADuplicate_NotRefusedForTheCreditItSpent(Backend backend)
    {
        // The member remembers its 2 newest ids: the third purchase after p1 makes p1 one only the ledger holds.
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "wallet-resend"), clock, "--Members:RecentTransactionsMax=2");
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "w" });
        await SubmitAsync(engine, "t1", "jackets");
        await InspectAsync(engine, "t1", V1.TradeInCondition.Good);

        V1.PurchaseAck paid = await engine.Purchases.AccrueAsync(Buy("p1", 100_00, walletMinor: 30_00));
        for (int i = 0; i < 3; i++)
        {
            await engine.Purchases.AccrueAsync(Buy($"later-{i}", 10_00, walletMinor: 0));
        }

        V1.PurchaseAck resent = await engine.Purchases.AccrueAsync(Buy("p1", 100_00, walletMinor: 30_00));
        RpcException reused = await RefusedAsync(engine.Purchases.AccrueAsync(Buy("p1", 90_00, walletMinor: 30_00)).ResponseAsync);
        RpcException overdrawn = await RefusedAsync(engine.Purchases.AccrueAsync(Buy("p9", 100_00, walletMinor: 1)).ResponseAsync);
        V1.Member member = await MemberAsync(engine);

        Assert.Equal(V1.AckStatus.Accepted, paid.Status);
        Assert.Equal((V1.AckStatus.Duplicate, paid.Sequence), (resent.Status, resent.Sequence));
        Assert.Equal(StatusCode.AlreadyExists, reused.StatusCode);
        Assert.Equal((StatusCode.FailedPrecondition, true), (overdrawn.StatusCode, overdrawn.Status.Detail.Contains("has 0 minor units of store credit", StringComparison.Ordinal)));
        Assert.Equal(0L, member.WalletMinor);
    }

    /// <summary>Jackets $50, $30 or $10 by condition; fleece $15 in good condition.</summary>
    private static V1.PutProgramRequest Settings()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.TradeIn = new V1.TradeInPolicy
        {
            Rates =
            {
                new V1.TradeInRate { Category = "jackets", Condition = V1.TradeInCondition.LikeNew, CreditMinor = 50_00 },
                new V1.TradeInRate { Category = "jackets", Condition = V1.TradeInCondition.Good, CreditMinor = 30_00 },
                new V1.TradeInRate { Category = "jackets", Condition = V1.TradeInCondition.Worn, CreditMinor = 10_00 },
                new V1.TradeInRate { Category = "fleece", Condition = V1.TradeInCondition.Good, CreditMinor = 15_00 },
            },
        };
        return request;
    }

    private static Task<V1.TradeInResponse> SubmitAsync(InProcessEngine engine, string id, string category) =>
        engine.Members.SubmitTradeInAsync(new V1.SubmitTradeInRequest { ProgramId = Program, MemberId = "w", TradeInId = id, Category = category, StoreId = "store-1" }).ResponseAsync;

    private static Task<V1.TradeInResponse> InspectAsync(InProcessEngine engine, string id, V1.TradeInCondition condition) =>
        engine.Members.InspectTradeInAsync(new V1.InspectTradeInRequest { ProgramId = Program, MemberId = "w", TradeInId = id, Condition = condition }).ResponseAsync;

    private static Task<V1.Member> MemberAsync(InProcessEngine engine) =>
        engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "w" }).ResponseAsync;

    private static V1.Purchase Buy(string txn, long amountMinor, long walletMinor)
    {
        V1.Purchase purchase = Wire.Purchase(Program, "w", txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(Start);
        purchase.WalletMinor = walletMinor;
        return purchase;
    }

    private static V1.ReturnRequest Return(string txn, long amountMinor) => new()
    {
        TransactionId = txn, ProgramId = Program, MemberId = "w", StoreId = "store-1", OriginalTransactionId = "p1",
        AmountMinor = amountMinor, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(Start),
    };

    /// <summary>The wallet's changes, summed by the database over the entries' details.</summary>
    private static Task<long> LedgerWalletAsync(InProcessEngine engine, Backend backend) =>
        Sql.ScalarAsync(engine.Storage, backend == Backend.Postgres
            ? $"SELECT COALESCE(SUM((details::jsonb ->> 'wallet_minor')::bigint), 0) FROM ledger_entries WHERE program_id = '{Program}'"
            : $"SELECT COALESCE(SUM(json_extract(details, '$.wallet_minor')), 0) FROM ledger_entries WHERE program_id = '{Program}'");

}
