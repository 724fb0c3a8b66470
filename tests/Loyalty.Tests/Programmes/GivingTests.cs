using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Giving back over gRPC on both databases: the member's chosen cause receives a share of each
/// purchase, returns take back the share of the money returned, reports total it per cause (checked
/// against the ledger), erasure forgets the choice, and the members rebuild from the ledger.
/// </summary>
public sealed class GivingTests
{
    private const string Program = "give";
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task PurchasesGiveTheirShare_ToTheChosenCause_ReturnsTakeItBack_AndReportsTotalItPerCause(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "giving"), clock);
        try
        {
            await engine.Programs.PutProgramAsync(Settings());
            foreach (string m in new[] { "a", "b", "c" })
            {
                await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = m });
            }

            V1.Member chose = await ChooseAsync(engine, "a", "forests");
            V1.PurchaseAck bought = await engine.Purchases.AccrueAsync(Buy("a", "a-1", 123_45));
            V1.ReturnAck part = await engine.Purchases.ReturnAsync(Return("a", "a-r1", "a-1", 50_00));
            V1.ReturnAck rest = await engine.Purchases.ReturnAsync(Return("a", "a-r2", "a-1", 73_45));
            await ChooseAsync(engine, "a", "oceans");
            V1.PurchaseAck second = await engine.Purchases.AccrueAsync(Buy("a", "a-2", 80_00));
            V1.PurchaseAck nobody = await engine.Purchases.AccrueAsync(Buy("b", "b-1", 80_00));
            await ChooseAsync(engine, "c", "forests");
            V1.PurchaseAck third = await engine.Purchases.AccrueAsync(Buy("c", "c-1", 20_00));

            Assert.Equal("forests", chose.Cause);
            Assert.Equal(("forests", 12_34L), (bought.Breakdown.Cause, bought.Breakdown.GivenMinor));
            Assert.Equal(-4_99L, await GivenOfAsync(engine, "a-r1"));
            Assert.Equal(-7_35L, await GivenOfAsync(engine, "a-r2"));
            Assert.Equal(("oceans", 8_00L), (second.Breakdown.Cause, second.Breakdown.GivenMinor));
            Assert.Equal(("", 0L), (nobody.Breakdown.Cause, nobody.Breakdown.GivenMinor));
            Assert.Equal(2_00L, third.Breakdown.GivenMinor);
            V1.Member a = await MemberAsync(engine, "a");
            Assert.Equal(("oceans", 8_00L), (a.Cause, a.GivenMinor));

            // The programme's report: per cause, net of returns, and equal to the ledger's own sum.
            var reports = new V1.Reports.ReportsClient(engine.Invoker);
            V1.ProgramReport report = await reports.GetProgramReportAsync(new V1.ProgramReportRequest { ProgramId = Program, From = "2026-11-01", GroupBy = V1.ReportGrouping.Month });
            Dictionary<string, long> given = report.Total.Donations.ToDictionary(d => d.Cause, d => d.GivenMinor);
            Assert.Equal(new Dictionary<string, long> { ["forests"] = 2_00, ["oceans"] = 8_00 }, given);
            Assert.Equal(given.Values.Sum(), await LedgerGivenAsync(engine, backend));

            // Refusals name their reason and write nothing.
            long entries = await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}'");
            Assert.Equal(StatusCode.NotFound, (await RefusedAsync(ChooseAsync(engine, "a", "rivers"))).StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, (await RefusedAsync(ChooseAsync(engine, "a", "no spaces"))).StatusCode);
            Assert.Equal(StatusCode.NotFound, (await RefusedAsync(ChooseAsync(engine, "ghost", "oceans"))).StatusCode);
            Assert.Equal(entries, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}'"));

            // An empty cause withdraws the choice: without a default cause, purchases give nothing.
            V1.Member withdrawn = await ChooseAsync(engine, "a", "");
            V1.PurchaseAck afterWithdrawal = await engine.Purchases.AccrueAsync(Buy("a", "a-3", 50_00));
            Assert.Equal(("", 0L), (withdrawn.Cause, afterWithdrawal.Breakdown.GivenMinor));

            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "a", "b", "c");

            // Erasure forgets the choice, in memory and in the ledger; the amounts stay for the accounts.
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "c", Reason = "ticket 7" });
            Assert.Equal("", (await MemberAsync(engine, "c")).Cause);
            Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'c' AND kind = 22 AND reference IS NOT NULL"));
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "c");

            // A program without giving refuses a choice.
            V1.PutProgramRequest plain = Settings();
            plain.Settings.Giving = null;
            await engine.Programs.PutProgramAsync(plain);
            Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(ChooseAsync(engine, "b", "oceans"))).StatusCode);
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task EveryLineReturned_TakesBackAllItGave_AndThePurchaseShowsFullyReturned(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "giving-lines"), new FakeTimeProvider(Start));
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "t" });
        await ChooseAsync(engine, "t", "oceans");

        // $108.00 with $8.00 of tax outside the lines: the lines add up to $100.
        V1.Purchase taxed = Buy("t", "tax-1", 108_00);
        taxed.LineItems.Clear();
        taxed.LineItems.Add(new V1.LineItem { Sku = "a", Category = "c", Quantity = 2, AmountMinor = 60_00 });
        taxed.LineItems.Add(new V1.LineItem { Sku = "b", Category = "c", Quantity = 1, AmountMinor = 40_00 });
        V1.PurchaseAck bought = await engine.Purchases.AccrueAsync(taxed);
        V1.ReturnRequest back = Return("t", "tax-r", "tax-1", 0);
        back.Lines.Add(new V1.ReturnLine { Sku = "a", Quantity = 2, AmountMinor = 60_00 });
        back.Lines.Add(new V1.ReturnLine { Sku = "b", Quantity = 1, AmountMinor = 40_00 });
        await engine.Purchases.ReturnAsync(back);
        V1.Transaction purchase = await engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = "t", TransactionId = "tax-1" });

        Assert.Equal(10_80, bought.Breakdown.GivenMinor);
        Assert.Equal(0, (await MemberAsync(engine, "t")).GivenMinor);
        Assert.Equal((true, 0L), (purchase.ReturnProgress.FullyReturned, purchase.ReturnProgress.ReturnableMinor));
    }

    /// <summary>10 % of each purchase to the member's cause; no default.</summary>
    private static V1.PutProgramRequest Settings()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.Giving = new V1.GivingPolicy
        {
            ShareBp = 1_000,
            Causes = { new V1.GivingCause { Id = "forests", Name = "Plant forests" }, new V1.GivingCause { Id = "oceans", Name = "Clean oceans" } },
        };
        return request;
    }

    private static Task<V1.Member> ChooseAsync(InProcessEngine engine, string member, string cause) =>
        engine.Members.ChooseCauseAsync(new V1.ChooseCauseRequest { ProgramId = Program, MemberId = member, CauseId = cause }).ResponseAsync;

    private static Task<V1.Member> MemberAsync(InProcessEngine engine, string member) =>
        engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = member }).ResponseAsync;

    private static V1.Purchase Buy(string member, string txn, long amountMinor)
    {
        V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(Start);
        return purchase;
    }

    private static V1.ReturnRequest Return(string member, string txn, string original, long amountMinor) => new()
    {
        TransactionId = txn, ProgramId = Program, MemberId = member, StoreId = "s", OriginalTransactionId = original,
        AmountMinor = amountMinor, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(Start),
    };

    private static async Task<long> GivenOfAsync(InProcessEngine engine, string txn)
    {
        V1.Transaction t = await engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = "a", TransactionId = txn });
        return t.Entry.Breakdown.GivenMinor;
    }

    /// <summary>The money given, summed by the database over the entries' details (net of returns).</summary>
    private static Task<long> LedgerGivenAsync(InProcessEngine engine, Backend backend) =>
        Sql.ScalarAsync(engine.Storage, backend == Backend.Postgres
            ? $"SELECT COALESCE(SUM((details::jsonb ->> 'given_minor')::bigint), 0) FROM ledger_entries WHERE program_id = '{Program}'"
            : $"SELECT COALESCE(SUM(json_extract(details, '$.given_minor')), 0) FROM ledger_entries WHERE program_id = '{Program}'");

}
