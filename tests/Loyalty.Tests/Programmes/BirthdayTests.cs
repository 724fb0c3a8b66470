using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Birthday rewards over gRPC on both databases, through the due schedule: the points and the gift
/// when the birthday month begins, once a year, active member or not; the gift redeemed once for
/// no points; a birthday entered during its month rewarded at once; none after erasure.
/// </summary>
public sealed class BirthdayTests
{
    private const string Program = "bday";
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task TheBirthdayMonth_BringsPointsAndAGift_OnceAYear_ThroughTheDueSchedule(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "birthday"), clock, "--Schedule:PollIntervalMs=50");
        try
        {
            var redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
            await engine.Programs.PutProgramAsync(Settings());
            foreach (string m in new[] { "dec", "late", "none", "gone" })
            {
                await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = m });
            }

            await ProfileAsync(engine, "dec", "1990-12-15");
            await ProfileAsync(engine, "gone", "12-24");
            RpcException malformed = await Assert.ThrowsAsync<RpcException>(() => ProfileAsync(engine, "none", "15/12/1990"));
            await Task.Delay(500);
            Assert.Equal(0, await BirthdaysAsync(engine, "dec"));
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "gone", Reason = "ticket 9" });

            // 1 December: the month begins; nobody calls the member, the due schedule wakes it at
            // its own place in the spread of wakes after midnight (30 minutes by default), so
            // that the members born in a month are not all due at the same instant.
            var midnight = new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero);
            TimeSpan lateBy = Loyalty.Grains.Expiring.WakeLateBy(Program, "dec", TimeSpan.FromMinutes(30));
            Assert.True(lateBy > TimeSpan.FromSeconds(2), "this member's place in the spread is too early to tell from midnight");
            clock.SetUtcNow(midnight + lateBy - TimeSpan.FromSeconds(2));
            await Task.Delay(500);
            long beforeItsWake = await BirthdaysAsync(engine, "dec");
            Assert.Equal(0, beforeItsWake);

            // A member who makes a change meanwhile (any change: here its flags) is not kept waiting for its place in the spread.
            await engine.Members.SetMemberFlagsAsync(new V1.SetMemberFlagsRequest { ProgramId = Program, MemberId = "dec", AddFlags = { "newsletter" } });
            await WaitForAsync(engine, "dec", 1);
            V1.Member dec = await MemberAsync(engine, "dec");
            V1.ListRewardsResponse rewards = await redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "dec" });
            V1.RedemptionAck free = await redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = Program, MemberId = "dec", TransactionId = "cake-1", RewardId = "cake" });
            RpcException second = await Assert.ThrowsAsync<RpcException>(() => redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = Program, MemberId = "dec", TransactionId = "cake-2", RewardId = "cake" }).ResponseAsync);

            Assert.Equal(StatusCode.InvalidArgument, malformed.StatusCode);
            Assert.Equal(100, dec.Balance);
            Assert.Equal(("cake", 2026, new DateTimeOffset(2027, 1, 1, 0, 0, 0, TimeSpan.Zero)), (dec.BirthdayGift.RewardId, dec.BirthdayGift.Year, dec.BirthdayGift.Until.ToDateTimeOffset()));
            V1.RewardOption cake = rewards.Rewards.Single(r => r.Reward.Id == "cake");
            Assert.Equal((true, 0L, 1), (cake.Redeemable, cake.PointsShort, cake.MaxUnits));
            Assert.Equal((0L, 100L), (free.Points, free.Balance));
            Assert.True((await TransactionAsync(engine, "dec", "cake-1")).Entry.Breakdown.BirthdayGift);
            Assert.Equal(StatusCode.FailedPrecondition, second.StatusCode);
            Assert.Null((await MemberAsync(engine, "dec")).BirthdayGift);

            // A birthday entered during its month is rewarded at once; later in the month, nothing more.
            clock.SetUtcNow(new DateTimeOffset(2026, 12, 20, 0, 0, 0, TimeSpan.Zero));
            await ProfileAsync(engine, "late", "12-03");
            await WaitForAsync(engine, "late", 1);
            await Task.Delay(500);
            Assert.Equal((1, 1, 0, 0), (await BirthdaysAsync(engine, "dec"), await BirthdaysAsync(engine, "late"), await BirthdaysAsync(engine, "none"), await BirthdaysAsync(engine, "gone")));

            // A basket that took the gift, returned whole within the month: the gift is hers again.
            V1.Purchase basket = Wire.Purchase(Program, "late", "basket-1", 30_00);
            basket.OccurredAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(clock.GetUtcNow().AddMinutes(-1));
            basket.RedeemRewardId = "cake";
            await engine.Purchases.AccrueAsync(basket);
            V1.BirthdayGift? takenInBasket = (await MemberAsync(engine, "late")).BirthdayGift;
            await engine.Purchases.ReturnAsync(new V1.ReturnRequest
            {
                ProgramId = Program, MemberId = "late", TransactionId = "basket-1-back", OriginalTransactionId = "basket-1", StoreId = "store-1",
                AmountMinor = 30_00, Currency = "USD", OccurredAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(clock.GetUtcNow()),
            });
            V1.Member lateAfterReturn = await MemberAsync(engine, "late");
            V1.RedemptionAck again = await redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = Program, MemberId = "late", TransactionId = "cake-late", RewardId = "cake" });
            Assert.Null(takenInBasket);
            Assert.Equal(("cake", 2026), (lateAfterReturn.BirthdayGift?.RewardId, lateAfterReturn.BirthdayGift?.Year));
            Assert.Equal(0L, again.Points);

            // The gift ends with the month; next year's month brings the next birthday.
            clock.SetUtcNow(new DateTimeOffset(2027, 1, 2, 0, 0, 0, TimeSpan.Zero));
            Assert.Null((await MemberAsync(engine, "late")).BirthdayGift);
            clock.SetUtcNow(new DateTimeOffset(2027, 12, 1, 0, 30, 1, TimeSpan.Zero));
            await WaitForAsync(engine, "dec", 2);
            Assert.Equal(200, (await MemberAsync(engine, "dec")).Balance);
            Assert.Equal(0, await BirthdaysAsync(engine, "gone"));

            // Erasure forgets the birth month and the birthday entries' reason; the points stay.
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "dec", Reason = "ticket 4" });
            Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'dec' AND ((kind = 23 AND reason IS NOT NULL) OR (kind = 14 AND details IS NOT NULL))"));
            V1.Member erased = await MemberAsync(engine, "dec");
            Assert.Equal(200, erased.Balance);
            // Before: the open gift, which ends as the birth month does, was still shown.
            Assert.Null(erased.BirthdayGift);
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "dec", "late", "none", "gone");
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    /// <summary>100 points and a cake (200 points in the catalogue) for each birthday; points never expire.</summary>
    private static V1.PutProgramRequest Settings()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.Rewards.Add(new V1.Reward { Id = "cake", Name = "Birthday cake", Kind = V1.RewardKind.Product, PointsPrice = 200, Sku = "CAKE" });
        request.Settings.Birthday = new V1.BirthdayPolicy { BonusPoints = 100, GiftRewardId = "cake" };
        return request;
    }

    private static Task<V1.Member> ProfileAsync(InProcessEngine engine, string member, string birthday) =>
        engine.Members.SetProfileAsync(new V1.SetProfileRequest { ProgramId = Program, MemberId = member, Fields = { ["name"] = member, ["birthday"] = birthday } }).ResponseAsync;

    private static Task<V1.Member> MemberAsync(InProcessEngine engine, string member) =>
        engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = member }).ResponseAsync;

    private static Task<V1.Transaction> TransactionAsync(InProcessEngine engine, string member, string txn) =>
        engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = member, TransactionId = txn }).ResponseAsync;

    private static Task<long> BirthdaysAsync(InProcessEngine engine, string member) => EntriesAsync(engine, Program, member, (int)V1.LedgerEntryKind.Birthday);

    private static Task WaitForAsync(InProcessEngine engine, string member, long birthdays) =>
        WaitForEntriesAsync(engine, Program, member, (int)V1.LedgerEntryKind.Birthday, birthdays);
}
