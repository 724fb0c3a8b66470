using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Tier reviews written when they fall due, over gRPC on both databases: for a member whose last
/// change came before the engine scheduled reviews (migration 17 brings it due), and after a
/// programme's ladder change moves the review (every member is brought due again).
/// </summary>
public sealed class TierReviewTests
{
    private const string Program = "tiers";
    private const int TierReviewed = 31;
    private static readonly DateTimeOffset Start = new(2026, 11, 2, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AMemberFromBeforeReviewsWereScheduled_IsReviewedOnTime_AfterTheUpgrade(Backend backend)
    {
        StorageOptions db = TestDatabases.Create(backend, "tierupgrade");
        var clock = new FakeTimeProvider(Start);
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock))
        {
            await engine.Programs.PutProgramAsync(Silver(graceDays: 5));
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
            await engine.Purchases.AccrueAsync(Wire.Purchase(Program, "m", "p1", 50_00));
        }

        // As a database written by the version before: no due row, and migration 17 not yet run.
        await Sql.ExecuteAsync(db, "DELETE FROM member_due");
        await Sql.ExecuteAsync(db, "DELETE FROM loyalty_schema_versions WHERE version = 17");
        clock.Advance(TimeSpan.FromDays(40));
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock, "--Schedule:PollIntervalMs=50"))
        {
            await WaitForEntriesAsync(engine, Program, "m", TierReviewed);
            V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m" });

            Assert.Equal("base", member.Tier);
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ALadderChangeThatBringsTheReviewForward_IsReviewedAtTheNewTime(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "tiergrace"), clock, "--Schedule:PollIntervalMs=50");
        await engine.Programs.PutProgramAsync(Silver(graceDays: 30));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        await engine.Purchases.AccrueAsync(Wire.Purchase(Program, "m", "p1", 50_00));

        await engine.Programs.PutProgramAsync(Silver(graceDays: 0));
        clock.Advance(TimeSpan.FromDays(32));
        await WaitForEntriesAsync(engine, Program, "m", TierReviewed);

        Assert.Equal("base", (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m" })).Tier);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AnErasedMember_IsStillReviewed_AndLeavesItsTier(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "tiererased"), clock, "--Schedule:PollIntervalMs=50");
        await engine.Programs.PutProgramAsync(Silver(graceDays: 0));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "e" });
        await engine.Purchases.AccrueAsync(Wire.Purchase(Program, "e", "p1", 50_00));
        string tierBefore = (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "e" })).Tier;
        await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "e", Reason = "ticket 5" });

        clock.Advance(TimeSpan.FromDays(32));
        await WaitForEntriesAsync(engine, Program, "e", TierReviewed);

        Assert.Equal("silver", tierBefore);
        Assert.Equal("base", (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "e" })).Tier);
    }

    /// <summary>Silver at 20 points in a 30-day window, held for a window and the grace after it.</summary>
    private static V1.PutProgramRequest Silver(int graceDays)
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        request.Settings.Tiers = new V1.TierLadder
        {
            WindowDays = 30, GraceDays = graceDays, Tiers = { new V1.Tier { Name = "base" }, new V1.Tier { Name = "silver", Threshold = 20, MultiplierBp = 12_500 } },
        };
        return request;
    }
}
