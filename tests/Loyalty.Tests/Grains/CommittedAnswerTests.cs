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
        IMemberGrain amy = await AmyWithAPurchaseAsync();

        (MemberResult profiled, AccrualResult bought) = await SetProfileAcrossAFailedPurchaseAsync(amy, whileHeld: () => Task.CompletedTask);

        Assert.Equal(LoyaltyError.Unavailable, bought.Error);
        Assert.True(profiled.Error == LoyaltyError.None, profiled.ErrorMessage);
        // Before: 920, the failed purchase's 900 points read from the state as it was applied.
        Assert.Equal(20L, profiled.Member!.Balance.Value);
        Assert.Equal(20L, (await amy.Get())!.Balance.Value);
    }

    /// <summary>
    /// On PostgreSQL only (<see cref="PostgresCommittedAnswerTests"/>): SQLite's profile write
    /// completes without yielding, so no purchase is applied between it and the answer there.
    /// </summary>
    protected async Task SetProfile_WhenTheMemberCannotBeReadAgainAfterAFailedCommit_SaysTheProfileIsRecorded_NotAStaleBalanceAsync()
    {
        IMemberGrain amy = await AmyWithAPurchaseAsync();

        // While the purchase is held, an entry of a kind this version does not know lands after the
        // profile's note (as a newer version would write it): the member cannot be loaded again.
        (MemberResult profiled, AccrualResult bought) = await SetProfileAcrossAFailedPurchaseAsync(amy, whileHeld: () => Sql.ExecuteAsync(fixture.Storage,
            "INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, fingerprint, amount_minor, occurred_at, recorded_at) " +
            $"VALUES ('{_program}', 'amy', 5, 999, 0, 0, 0, '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z');"));

        Assert.NotEqual(LoyaltyError.None, bought.Error);
        // Before: OK with a balance of 920, read from a state holding the failed purchase.
        Assert.Equal(LoyaltyError.Unavailable, profiled.Error);
        Assert.Contains("the change is recorded", profiled.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM member_profiles WHERE program_id = '{_program}' AND member_id = 'amy'"));
    }

    /// <summary>Amy, enrolled, with a purchase of 20 points.</summary>
    private async Task<IMemberGrain> AmyWithAPurchaseAsync()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(new ProgramSettings("Shop", "USD", 2, 1));
        IMemberGrain amy = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "amy"));
        Assert.Equal(LoyaltyError.None, (await amy.Enrol(new Enrolment(_program, "amy", null))).Error);
        Assert.Equal(LoyaltyError.None, (await amy.Accrue(Purchase("p1", 20_00))).Error);
        return amy;
    }

    /// <summary>
    /// Amy's SetProfile, with a purchase of 900 points applied while the profile is written: the
    /// profile's note is held at its commit (on the ledger's writer) until the purchase waits
    /// behind it, then written; the purchase is held at its commit, <paramref name="whileHeld"/>
    /// runs, and the purchase fails.
    /// </summary>
    private async Task<(MemberResult Profiled, AccrualResult Bought)> SetProfileAcrossAFailedPurchaseAsync(IMemberGrain amy, Func<Task> whileHeld)
    {
        using var noteAtCommit = new ManualResetEventSlim();
        using var noteGo = new ManualResetEventSlim();
        using var purchaseAtCommit = new ManualResetEventSlim();
        using var purchaseGo = new ManualResetEventSlim();
        FaultInjector faults = fixture.SiloServices.GetRequiredService<FaultInjector>();
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
        try
        {
            Task<MemberResult> profiling = amy.SetProfile(new Dictionary<string, string> { ["name"] = "Amy" });
            Assert.True(noteAtCommit.Wait(GateWaitMax));
            Task<AccrualResult> buying = amy.Accrue(Purchase("fails", 900_00)).AsTask();
            await Task.Delay(200);
            noteGo.Set();
            Assert.True(purchaseAtCommit.Wait(GateWaitMax), "the purchase did not reach its commit");
            await whileHeld();
            await Task.WhenAny(profiling, Task.Delay(300));
            purchaseGo.Set();
            return (await profiling, await buying);
        }
        finally
        {
            noteGo.Set();
            purchaseGo.Set();
            faults.Disarm();
        }
    }

    private Purchase Purchase(string txn, long amountMinor) =>
        new(txn, _program, "amy", "s1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow().AddMinutes(-1), []);
}

public sealed class SqliteCommittedAnswerTests(SqliteClusterFixture fixture) : CommittedAnswerTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresCommittedAnswerTests(PostgresClusterFixture fixture) : CommittedAnswerTests(fixture), IClassFixture<PostgresClusterFixture>
{
    [Fact]
    public Task SetProfile_WhenTheMemberCannotBeReadAgainAfterAFailedCommit_SaysTheProfileIsRecorded_NotAStaleBalance() =>
        SetProfile_WhenTheMemberCannotBeReadAgainAfterAFailedCommit_SaysTheProfileIsRecorded_NotAStaleBalanceAsync();
}
