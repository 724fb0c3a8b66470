using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Personal bonus days over gRPC on both databases: booked within the tier's allowance, earning
/// on the day only, reversed with a return, refused with their reasons, and rebuilt from the ledger.
/// </summary>
public sealed class BonusDayTests
{
    private const string Program = "days";

    /// <summary>Monday 30 November 2026, 15:00 UTC: 10:00 in New York, the program's zone.</summary>
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 15, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ABookedDay_EarnsItsMultiplier_WithinTheTiersAllowance_AndReplays(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "bonus-days"), clock);
        try
        {
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "n" });

            V1.BookBonusDayResponse first = await BookAsync(engine, "b-1", "2026-12-05");
            V1.BookBonusDayResponse resent = await BookAsync(engine, "b-1", "2026-12-05");
            V1.BookBonusDayResponse twice = await BookAsync(engine, "b-2", "2026-12-05");
            RpcException overAllowance = await RefusedAsync(BookAsync(engine, "b-3", "2026-12-06"));
            V1.BookBonusDayResponse nextYear = await BookAsync(engine, "b-4", "2027-01-02");
            RpcException past = await RefusedAsync(BookAsync(engine, "b-5", "2026-11-29"));
            RpcException reused = await RefusedAsync(BookAsync(engine, "b-1", "2027-01-03"));
            RpcException malformed = await RefusedAsync(BookAsync(engine, "b-6", "5 Dec 2026"));
            RpcException unknown = await RefusedAsync(BookAsync(engine, "b-7", "2026-12-07", member: "ghost"));

            Assert.Equal(("2026-12-05", false, 0), (first.Day, first.AlreadyBooked, first.DaysLeft));
            Assert.Equal(new[] { "2026-12-05" }, first.BookedDays);
            Assert.Equal((true, first.Sequence), (resent.AlreadyBooked, resent.Sequence));
            Assert.Equal((true, 0L), (twice.AlreadyBooked, twice.Sequence));
            Assert.Equal((StatusCode.FailedPrecondition, true), (overAllowance.StatusCode, overAllowance.Status.Detail.Contains("all 1 bonus days of 2026", StringComparison.Ordinal)));
            Assert.Equal((false, 0), (nextYear.AlreadyBooked, nextYear.DaysLeft));
            Assert.Equal((StatusCode.InvalidArgument, true), (past.StatusCode, past.Status.Detail.Contains("from today (2026-11-30", StringComparison.Ordinal)));
            Assert.Equal(StatusCode.AlreadyExists, reused.StatusCode);
            Assert.Equal((StatusCode.InvalidArgument, true), (malformed.StatusCode, malformed.Status.Detail.Contains("day must be", StringComparison.Ordinal)));
            Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
            Assert.Equal(2, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND kind = 21"));

            // 23:30 on 5 December in New York is already the 6th in UTC: the program's day counts.
            clock.SetUtcNow(new DateTimeOffset(2026, 12, 7, 12, 0, 0, TimeSpan.Zero));
            V1.PurchaseAck onTheDay = await engine.Purchases.AccrueAsync(Buy("p-day", new DateTimeOffset(2026, 12, 5, 23, 30, 0, TimeSpan.FromHours(-5)), 40_00));
            V1.PurchaseAck dayAfter = await engine.Purchases.AccrueAsync(Buy("p-after", new DateTimeOffset(2026, 12, 6, 12, 0, 0, TimeSpan.FromHours(-5)), 40_00));
            V1.ReturnAck halfBack = await engine.Purchases.ReturnAsync(new V1.ReturnRequest
            {
                TransactionId = "r-day", ProgramId = Program, MemberId = "n", StoreId = "s", OriginalTransactionId = "p-day",
                AmountMinor = 20_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(new DateTimeOffset(2026, 12, 6, 18, 0, 0, TimeSpan.Zero)),
            });

            Assert.Equal((40 + 40, 40), (onTheDay.PointsEarned, dayAfter.PointsEarned));
            V1.BreakdownComponent day = Assert.Single(onTheDay.Breakdown.Components, c => c.Kind == V1.ComponentKind.BonusDay);
            Assert.Equal(("2026-12-05", 40L), (day.Code, day.Points));
            Assert.DoesNotContain(dayAfter.Breakdown.Components, c => c.Kind == V1.ComponentKind.BonusDay);
            Assert.Equal(40, halfBack.PointsReversed);

            V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "n" });
            Assert.Equal(new[] { "2027-01-02" }, member.BonusDays);
            Assert.Equal(0, member.BonusDaysLeft);
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "n");
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AHigherTier_BooksMoreDays_AndAProgramWithoutBonusDaysRefusesBookings(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "bonus-tiers"), clock);
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "g" });
        await engine.Purchases.AccrueAsync(Buy("big", Start, 1_000_00, member: "g"));

        V1.Member gold = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "g" });
        V1.BookBonusDayResponse[] booked = [await BookAsync(engine, "g-1", "2026-12-10", "g"), await BookAsync(engine, "g-2", "2026-12-11", "g")];
        V1.Member afterTwo = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "g" });
        V1.PutProgramRequest plain = Settings();
        plain.Settings.BonusDays = null;
        await engine.Programs.PutProgramAsync(plain);
        RpcException none = await RefusedAsync(BookAsync(engine, "g-3", "2026-12-12", "g"));

        Assert.Equal(("gold", 3), (gold.Tier, gold.BonusDaysLeft));
        Assert.Equal(new[] { 2, 1 }, booked.Select(b => b.DaysLeft));
        Assert.Equal(1, afterTwo.BonusDaysLeft);
        Assert.Equal((StatusCode.FailedPrecondition, true), (none.StatusCode, none.Status.Detail.Contains("no personal bonus days", StringComparison.Ordinal)));
    }

    /// <summary>New York time; member tier 1 bonus day a year, gold (500 points) 3; days at x2, the larger of day and campaigns applying.</summary>
    private static V1.PutProgramRequest Settings()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.TimeZone = "America/New_York";
        request.Settings.BonusDays = new V1.BonusDayPolicy { MultiplierBp = 20_000, Stacking = V1.BonusDayStacking.Larger };
        request.Settings.Tiers = new V1.TierLadder
        {
            WindowDays = 365,
            Tiers = { new V1.Tier { Name = "member", BonusDaysPerYear = 1 }, new V1.Tier { Name = "gold", Threshold = 500, BonusDaysPerYear = 3 } },
        };
        return request;
    }

    private static Task<V1.BookBonusDayResponse> BookAsync(InProcessEngine engine, string id, string day, string member = "n") =>
        engine.Members.BookBonusDayAsync(new V1.BookBonusDayRequest { ProgramId = Program, MemberId = member, BookingId = id, Day = day }).ResponseAsync;

    private static V1.Purchase Buy(string txn, DateTimeOffset at, long amountMinor, string member = "n")
    {
        V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(at);
        return purchase;
    }

}
