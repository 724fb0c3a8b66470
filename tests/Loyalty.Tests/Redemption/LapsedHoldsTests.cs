using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Loyalty.Tests.Redemption;

/// <summary>
/// Reservations past their lapse time whose end the due schedule has not written yet (it is behind,
/// failing or, here, not polling) count against the member's open reservations: the member writes
/// their ends itself before it takes a new one, so its list of holds stays bounded.
/// </summary>
public sealed class LapsedHoldsTests
{
    private const string Program = "holds";
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AReservation_AfterTheMaximumOfHoldsLapsedUnwritten_WritesTheirEndsFirst_AndIsTaken(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        // The schedule does not poll during the test: no wake writes a lapse.
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "lapsed-holds"), clock, "--Schedule:PollIntervalMs=3600000");
        IGrainFactory grains = engine.Services.GetRequiredService<IGrainFactory>();
        var coffee = new Reward("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE", Stock: 40);
        await grains.GetGrain<IProgramGrain>(Program).Put(new ProgramSettings("Shop", "USD", 2, 1, SignupBonusPoints: 10_000, Rewards: [coffee],
            ReservationHoldSeconds: Limits.ReservationHoldSecondsMin));
        IMemberGrain member = grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(Program, "m"));
        Assert.Equal(LoyaltyError.None, (await member.Enrol(new Enrolment(Program, "m", null))).Error);
        for (int i = 0; i < Limits.OpenReservationsMax; i++)
        {
            RedemptionResult held = await member.Reserve(new Loyalty.Redemption($"r{i}", "coffee", 1));
            Assert.True(held.Status == AccrualStatus.Accepted, held.ErrorMessage);
        }

        RedemptionResult full = await member.Reserve(new Loyalty.Redemption("over", "coffee", 1));
        clock.Advance(TimeSpan.FromSeconds(Limits.ReservationHoldSecondsMin + 1));

        RedemptionResult next = await member.Reserve(new Loyalty.Redemption("next", "coffee", 1));

        Assert.Equal(LoyaltyError.FailedPrecondition, full.Error);
        Assert.Contains($"already holds {Limits.OpenReservationsMax} open reservations", full.ErrorMessage, StringComparison.Ordinal);
        Assert.True(next.Status == AccrualStatus.Accepted, next.ErrorMessage);
        // Before: taken beside the 32 lapsed holds, whose ends stayed unwritten (the list grew by one a reservation).
        Assert.Equal(Limits.OpenReservationsMax, await Sql.ScalarAsync(engine.Storage,
            $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'm' AND kind = {(int)LedgerEntryKind.ReservationEnd}"));
        Assert.Equal(["next"], (await member.Reservations())!.Select(r => r.ReservationId));
        Assert.Equal(10_000L, (await member.Get())!.Balance.Value);
        // The lapsed holds' units went back to the stock as their ends were written (as the wake's do).
        Assert.Equal(1L, await grains.GetGrain<IRewardStockGrain>(Program + "/coffee").Taken());
    }
}
