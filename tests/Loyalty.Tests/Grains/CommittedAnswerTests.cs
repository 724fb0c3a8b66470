using Loyalty.Grains;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Loyalty.Tests.Grains;

/// <summary>
/// An answer given after the request awaited something shows the member as committed: another
/// request's change, applied meanwhile and then failing at its commit, is never in it.
/// </summary>
public abstract class CommittedAnswerTests(ClusterFixture fixture)
{
    private static readonly TimeSpan GateWaitMax = TimeSpan.FromSeconds(10);

    private readonly string _program = "k" + Guid.NewGuid().ToString("N")[..10];

    [Fact]
    public async Task SetProfile_WhileAnotherPurchaseIsAppliedAndThenFails_AnswersTheCommittedBalance()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(new ProgramSettings("Shop", "USD", 2, 1));
        IMemberGrain amy = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "amy"));
        Assert.Equal(LoyaltyError.None, (await amy.Enrol(new Enrolment(_program, "amy", null))).Error);
        Assert.Equal(LoyaltyError.None, (await amy.Accrue(Purchase("p1", 20_00))).Error);
        using var noteAtCommit = new ManualResetEventSlim();
        using var noteGo = new ManualResetEventSlim();
        using var purchaseAtCommit = new ManualResetEventSlim();
        using var purchaseGo = new ManualResetEventSlim();
        FaultInjector faults = fixture.SiloServices.GetRequiredService<FaultInjector>();
        // Both held at their commit on the ledger's writer: the profile's note until the purchase
        // waits behind it, then written; the purchase (applied by then) until released, then failed.
        faults.Arm((at, entry) =>
        {
            if (at != FaultStep.Commit || entry.ProgramId != _program)
            {
                return false;
            }

            (ManualResetEventSlim entered, ManualResetEventSlim go, bool fail) = entry.Kind == LedgerEntryKind.Profile ? (noteAtCommit, noteGo, false) : (purchaseAtCommit, purchaseGo, true);
            entered.Set();
            go.Wait(GateWaitMax);
            return fail;
        });
        MemberResult profiled;
        AccrualResult bought;
        try
        {
            Task<MemberResult> profiling = amy.SetProfile(new Dictionary<string, string> { ["name"] = "Amy" });
            Assert.True(noteAtCommit.Wait(GateWaitMax));
            Task<AccrualResult> buying = amy.Accrue(Purchase("fails", 900_00)).AsTask();
            await Task.Delay(200);
            noteGo.Set();
            Assert.True(purchaseAtCommit.Wait(GateWaitMax), "the purchase did not reach its commit");
            await Task.WhenAny(profiling, Task.Delay(300));
            purchaseGo.Set();
            profiled = await profiling;
            bought = await buying;
        }
        finally
        {
            noteGo.Set();
            purchaseGo.Set();
            faults.Disarm();
        }

        Assert.Equal(LoyaltyError.Unavailable, bought.Error);
        Assert.True(profiled.Error == LoyaltyError.None, profiled.ErrorMessage);
        // Before: 920, the failed purchase's 900 points read from the state as it was applied.
        Assert.Equal(20L, profiled.Member!.Balance.Value);
        Assert.Equal(20L, (await amy.Get())!.Balance.Value);
    }

    private Purchase Purchase(string txn, long amountMinor) =>
        new(txn, _program, "amy", "s1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow().AddMinutes(-1), []);
}

public sealed class SqliteCommittedAnswerTests(SqliteClusterFixture fixture) : CommittedAnswerTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresCommittedAnswerTests(PostgresClusterFixture fixture) : CommittedAnswerTests(fixture), IClassFixture<PostgresClusterFixture>;
