using System.Text.Json;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Grains;

/// <summary>Member and program grains in a real Orleans cluster on a real database.</summary>
public abstract class MemberGrainTests(ClusterFixture fixture)
{
    private readonly string _program = "p" + Guid.NewGuid().ToString("N")[..10];

    private IGrainFactory Grains => fixture.Grains;

    [Fact]
    public async Task GrainReferences_AfterTheFirst_AreTheSameGrainsAsOrleansGives()
    {
        var references = new GrainReferences<IMemberGrain>(Grains);
        string key = LoyaltyIds.MemberKey(_program, "m1"), other = LoyaltyIds.MemberKey(_program, "m2");

        IMemberGrain first = references.Get(key), second = references.Get(other);

        Assert.Equal(Grains.GetGrain<IMemberGrain>(key).GetGrainId(), first.GetGrainId());
        Assert.Equal(Grains.GetGrain<IMemberGrain>(other).GetGrainId(), second.GetGrainId());
        await EnrolAsync("m2");
        Assert.NotNull(await second.Get());

        // The two-part form writes the key's bytes itself: the same grains, first call or not.
        Assert.Equal(first.GetGrainId(), references.Get(_program, "m1").GetGrainId());
        Assert.Equal(second.GetGrainId(), new GrainReferences<IMemberGrain>(Grains).Get(_program, "m2").GetGrainId());
        Assert.NotEqual(first.GetGrainId(), references.Get(_program, "m2").GetGrainId());
        Assert.Equal(Grains.GetGrain<IMemberGrain>("é/ü-3").GetGrainId(), references.Get("é", "ü-3").GetGrainId());
        Assert.NotNull(await references.Get(_program, "m2").Get());
    }

    [Fact]
    public async Task Activation_OfAMember_RecordsItsColdLoadDuration()
    {
        var recorded = new List<double>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == Loyalty.Grains.GrainMetrics.MeterName && instrument.Name == "loyalty.member.cold_load_duration")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) =>
        {
            lock (recorded)
            {
                recorded.Add(value);
            }
        });
        listener.Start();

        await EnrolAsync("cold");

        lock (recorded)
        {
            Assert.NotEmpty(recorded);
            Assert.All(recorded, ms => Assert.True(ms >= 0));
        }
    }

    [Fact]
    public async Task Accrue_EnrolledMember_EarnsAmountTimesRateRoundedDownAndIsInTheLedger()
    {
        IMemberGrain member = await EnrolAsync("m1");

        AccrualResult result = await member.Accrue(Entries.Purchase(_program, "m1", "t1", 12_99));

        Assert.Equal(AccrualStatus.Accepted, result.Status);
        Assert.Equal(new Points(25), result.Earned); // 12.99 x 2 = 25.98, rounded down
        Assert.Equal(new Points(25), result.Balance);
        Assert.Equal(25, await Sql.SumPointsAsync(fixture.Storage, _program, "m1"));
    }

    [Fact]
    public async Task Accrue_ResendWithSameContent_IsDuplicateAndEarnsNothing()
    {
        IMemberGrain member = await EnrolAsync("m1");
        Purchase purchase = Entries.Purchase(_program, "m1", "t1", 10_00);
        await member.Accrue(purchase);

        AccrualResult again = await member.Accrue(purchase);

        Assert.Equal(AccrualStatus.Duplicate, again.Status);
        Assert.Equal(new Points(20), again.Earned);
        Assert.Equal(new Points(20), (await member.Get())!.Balance);
        Assert.Equal(2, await Sql.CountEntriesAsync(fixture.Storage, _program, "m1")); // enrol + one earn
    }

    [Fact]
    public async Task Accrue_SameTransactionIdWithOtherContent_IsAlreadyExists()
    {
        IMemberGrain member = await EnrolAsync("m1");
        await member.Accrue(Entries.Purchase(_program, "m1", "t1", 10_00));

        AccrualResult other = await member.Accrue(Entries.Purchase(_program, "m1", "t1", 99_00));

        Assert.Equal(LoyaltyError.AlreadyExists, other.Error);
        Assert.Equal(new Points(20), (await member.Get())!.Balance);
    }

    [Fact]
    public async Task Accrue_ResendOlderThanMemoryAfterReactivation_IsAnsweredFromTheLedger()
    {
        IMemberGrain member = await EnrolAsync("m1");
        Purchase first = Entries.Purchase(_program, "m1", "t0", 5_00);
        await member.Accrue(first);
        for (int i = 1; i <= ClusterFixture.RecentTransactionsMax + 3; i++)
        {
            await member.Accrue(Entries.Purchase(_program, "m1", $"t{i}", 1_00));
        }

        Points before = (await member.Get())!.Balance;
        await fixture.DeactivateAllAsync();

        AccrualResult resend = await member.Accrue(first);
        AccrualResult conflicting = await member.Accrue(first with { Amount = new Money(6_00, "USD") });

        Assert.Equal(AccrualStatus.Duplicate, resend.Status);
        Assert.Equal(new Points(10), resend.Earned);
        Assert.Equal(LoyaltyError.AlreadyExists, conflicting.Error);
        Assert.Equal(before, (await member.Get())!.Balance);
        Assert.Equal(before.Value, await Sql.SumPointsAsync(fixture.Storage, _program, "m1"));
    }

    [Fact]
    public async Task Accrue_TransactionIdUsedByAnotherMember_IsAlreadyExistsAndChangesNothing()
    {
        IMemberGrain a = await EnrolAsync("a");
        IMemberGrain b = await EnrolAsync("b");
        await a.Accrue(Entries.Purchase(_program, "a", "shared", 10_00));

        AccrualResult result = await b.Accrue(Entries.Purchase(_program, "b", "shared", 10_00));
        AccrualResult next = await b.Accrue(Entries.Purchase(_program, "b", "own", 1_00));

        Assert.Equal(LoyaltyError.AlreadyExists, result.Error);
        Assert.Equal(AccrualStatus.Accepted, next.Status);
        Assert.Equal(new Points(2), (await b.Get())!.Balance);
        Assert.Equal(2, await Sql.SumPointsAsync(fixture.Storage, _program, "b"));
    }

    [Fact]
    public async Task Accrue_Refusals_NameTheProblemAndWriteNothing()
    {
        IMemberGrain member = await EnrolAsync("m1");
        IMemberGrain stranger = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "nobody"));
        IMemberGrain noProgram = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program + "x", "m1"));

        AccrualResult notEnrolled = await stranger.Accrue(Entries.Purchase(_program, "nobody", "t1", 1_00));
        AccrualResult unknownProgram = await noProgram.Accrue(Entries.Purchase(_program + "x", "m1", "t1", 1_00));
        AccrualResult currency = await member.Accrue(Entries.Purchase(_program, "m1", "t2", 1_00) with { Amount = new Money(1_00, "EUR") });
        AccrualResult amount = await member.Accrue(Entries.Purchase(_program, "m1", "t3", 0));
        AccrualResult future = await member.Accrue(Entries.Purchase(_program, "m1", "t4", 1_00, DateTimeOffset.UtcNow.AddDays(1)));

        Assert.Equal((LoyaltyError.NotFound, true), (notEnrolled.Error, notEnrolled.ErrorMessage!.Contains("nobody", StringComparison.Ordinal)));
        Assert.Equal((LoyaltyError.NotFound, true), (unknownProgram.Error, unknownProgram.ErrorMessage!.Contains("program", StringComparison.Ordinal)));
        Assert.Equal((LoyaltyError.FailedPrecondition, true), (currency.Error, currency.ErrorMessage!.Contains("currency", StringComparison.Ordinal)));
        Assert.Equal((LoyaltyError.InvalidArgument, true), (amount.Error, amount.ErrorMessage!.Contains("amount_minor", StringComparison.Ordinal)));
        Assert.Equal((LoyaltyError.InvalidArgument, true), (future.Error, future.ErrorMessage!.Contains("occurred_at", StringComparison.Ordinal)));
        Assert.Equal(1, await Sql.CountEntriesAsync(fixture.Storage, _program, "m1"));
        Assert.Equal(0, await Sql.CountEntriesAsync(fixture.Storage, _program, "nobody"));
    }

    [Fact]
    public async Task Reactivation_FromSnapshotPlusLedger_RestoresTheSameState()
    {
        IMemberGrain member = await EnrolAsync("m1");
        for (int i = 0; i < (ClusterFixture.SnapshotEveryEntries * 2) + 2; i++)
        {
            await member.Accrue(Entries.Purchase(_program, "m1", $"t{i}", (i + 1) * 1_00));
        }

        MemberView before = (await member.Get())!;
        await fixture.DeactivateAllAsync();
        MemberView after = (await member.Get())!;

        Assert.True(await Sql.ScalarAsync(fixture.Storage, "SELECT count(*) FROM orleansstorage WHERE payloadbinary IS NOT NULL") > 0);
        Assert.Equal(JsonSerializer.Serialize(before), JsonSerializer.Serialize(after));
        Assert.Equal(before.Balance.Value, await Sql.SumPointsAsync(fixture.Storage, _program, "m1"));
    }

    [Fact]
    public async Task Reactivation_WithoutAnySnapshot_ReplaysTheWholeLedger()
    {
        IMemberGrain member = await EnrolAsync("m1");
        for (int i = 0; i < 7; i++)
        {
            await member.Accrue(Entries.Purchase(_program, "m1", $"t{i}", 3_00));
        }

        await fixture.DeactivateAllAsync();
        await Sql.ExecuteAsync(fixture.Storage, "DELETE FROM orleansstorage");

        MemberView after = (await member.Get())!;

        Assert.Equal(new Points(42), after.Balance);
        Assert.Equal(8, after.LastSequence);
    }

    [Fact]
    public async Task Reactivation_WithAnUnreadableSnapshot_RebuildsFromTheLedgerAndReplacesIt()
    {
        IMemberGrain member = await EnrolAsync("m1");
        for (int i = 0; i < (ClusterFixture.SnapshotEveryEntries * 2) + 3; i++)
        {
            await member.Accrue(Entries.Purchase(_program, "m1", $"t{i}", (i + 1) * 1_00));
        }

        MemberView before = (await member.Get())!;
        await fixture.DeactivateAllAsync();
        string row = $"FROM orleansstorage WHERE grainidextensionstring = '{LoyaltyIds.MemberKey(_program, "m1")}'";
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, "SELECT count(*) " + row + " AND payloadbinary IS NOT NULL"));
        string garbage = fixture.Backend == Backend.Sqlite ? "X'00FF13370BADF00D'" : "'\\x00ff13370badf00d'::bytea";
        await Sql.ExecuteAsync(fixture.Storage, $"UPDATE orleansstorage SET payloadbinary = {garbage} WHERE grainidextensionstring = '{LoyaltyIds.MemberKey(_program, "m1")}'");

        MemberView rebuilt = (await member.Get())!;
        AccrualResult next = await member.Accrue(Entries.Purchase(_program, "m1", "after", 1_00));
        await fixture.DeactivateAllAsync();
        // The change's snapshot write (the unreadable row is replaced after the next change) may
        // still be on its way when deactivation skips its own: it lands within moments.
        long garbageRows = 1;
        for (DateTime until = DateTime.UtcNow.AddSeconds(10); garbageRows > 0 && DateTime.UtcNow < until; await Task.Delay(50))
        {
            garbageRows = await Sql.ScalarAsync(fixture.Storage, "SELECT count(*) " + row + $" AND payloadbinary = {garbage}");
        }

        MemberView reloaded = (await member.Get())!;

        Assert.Equal(JsonSerializer.Serialize(before), JsonSerializer.Serialize(rebuilt));
        Assert.Equal((AccrualStatus.Accepted, before.LastSequence + 1), (next.Status, next.Sequence));
        // The snapshot written after the next change replaced the unreadable row (under the row's own version).
        Assert.Equal((0L, 1L), (garbageRows, await Sql.ScalarAsync(fixture.Storage, "SELECT count(*) " + row + " AND payloadbinary IS NOT NULL")));
        Assert.Equal(before.Balance + new Points(2), reloaded.Balance);
        Assert.Equal(reloaded.Balance.Value, await Sql.SumPointsAsync(fixture.Storage, _program, "m1"));
    }

    [Fact]
    public async Task Accrue_ManyConcurrentPurchasesOfOneMember_AllCommitWithDistinctSequences()
    {
        IMemberGrain member = await EnrolAsync("hot");
        const int count = 300;

        AccrualResult[] results = await Task.WhenAll(Enumerable.Range(0, count)
            .Select(i => member.Accrue(Entries.Purchase(_program, "hot", $"t{i}", 1_00)).AsTask()));

        Assert.All(results, r => Assert.Equal(AccrualStatus.Accepted, r.Status));
        Assert.Equal(count, results.Select(r => r.Sequence).Distinct().Count());
        Assert.Equal(new Points(count * 2), (await member.Get())!.Balance);
        Assert.Equal(count * 2, await Sql.SumPointsAsync(fixture.Storage, _program, "hot"));
    }

    [Fact]
    public async Task Accrue_CommitFails_IsUnavailableAndNotKept_ThenRetrySucceeds()
    {
        IMemberGrain member = await EnrolAsync("m1");
        await member.Accrue(Entries.Purchase(_program, "m1", "t1", 10_00));
        string fault = "fault_" + _program;
        await Sql.ExecuteAsync(fixture.Storage, fixture.Backend == Backend.Sqlite
            ? $"CREATE TRIGGER {fault} BEFORE INSERT ON ledger_entries WHEN NEW.program_id = '{_program}' AND NEW.points > 1000 BEGIN SELECT RAISE(ABORT, 'injected'); END;"
            : $"ALTER TABLE ledger_entries ADD CONSTRAINT {fault} CHECK (program_id <> '{_program}' OR points <= 1000)");
        Purchase big = Entries.Purchase(_program, "m1", "big", 1_000_00);

        AccrualResult failed = await member.Accrue(big);
        MemberView afterFailure = (await member.Get())!;
        await Sql.ExecuteAsync(fixture.Storage, fixture.Backend == Backend.Sqlite
            ? $"DROP TRIGGER {fault}"
            : $"ALTER TABLE ledger_entries DROP CONSTRAINT {fault}");
        AccrualResult retried = await member.Accrue(big);

        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Equal(new Points(20), afterFailure.Balance);
        Assert.Equal(AccrualStatus.Accepted, retried.Status);
        Assert.Equal(new Points(2020), (await member.Get())!.Balance);
        Assert.Equal(2020, await Sql.SumPointsAsync(fixture.Storage, _program, "m1"));
    }

    [Fact]
    public async Task Enrol_Twice_SameDetailsIsAlreadyEnrolled_OtherDetailsAreRefused()
    {
        await EnrolAsync("ref");
        IMemberGrain member = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "m1"));
        await member.Enrol(new Enrolment(_program, "m1", "ref"));

        EnrolmentResult same = await member.Enrol(new Enrolment(_program, "m1", "ref"));
        EnrolmentResult other = await member.Enrol(new Enrolment(_program, "m1", null));

        Assert.True(same.AlreadyEnrolled);
        Assert.Equal(LoyaltyError.AlreadyExists, other.Error);
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'm1' AND kind = 1"));
    }

    [Fact]
    public async Task Enrol_WithReferrer_LinksBothDirections_AndSurvivesReactivation()
    {
        IMemberGrain referrer = await EnrolAsync("alice");
        IMemberGrain referred = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "bob"));

        EnrolmentResult result = await referred.Enrol(new Enrolment(_program, "bob", "alice"));
        await fixture.DeactivateAllAsync();

        Assert.Equal("alice", result.Member!.ReferredBy);
        Assert.Equal("alice", (await referred.Get())!.ReferredBy);
        Assert.Equal(["bob"], (await referrer.Get())!.Referrals);
    }

    [Fact]
    public async Task Enrol_Refusals_UnknownProgramSelfReferralUnknownReferrer()
    {
        IMemberGrain member = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "m1"));
        IMemberGrain orphan = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program + "x", "m1"));
        await CreateProgramAsync();

        EnrolmentResult noProgram = await orphan.Enrol(new Enrolment(_program + "x", "m1", null));
        EnrolmentResult self = await member.Enrol(new Enrolment(_program, "m1", "m1"));
        EnrolmentResult unknown = await member.Enrol(new Enrolment(_program, "m1", "ghost"));

        Assert.Equal(LoyaltyError.NotFound, noProgram.Error);
        Assert.Equal(LoyaltyError.InvalidArgument, self.Error);
        Assert.Equal(LoyaltyError.NotFound, unknown.Error);
        Assert.Null(await member.Get());
    }

    [Fact]
    public async Task GetLedger_PagesNewestFirstAcrossPages()
    {
        IMemberGrain member = await EnrolAsync("m1");
        for (int i = 0; i < 5; i++)
        {
            await member.Accrue(Entries.Purchase(_program, "m1", $"t{i}", 1_00));
        }

        LedgerPage first = (await member.GetLedger(null, 4))!;
        LedgerPage second = (await member.GetLedger(first.NextBeforeSequence, 4))!;

        Assert.Equal([6L, 5L, 4L, 3L], first.Entries.Select(e => e.Sequence));
        Assert.Equal([2L, 1L], second.Entries.Select(e => e.Sequence));
        Assert.Null(second.NextBeforeSequence);
        Assert.Equal(LedgerEntryKind.Enrol, second.Entries[^1].Kind);
    }

    [Fact]
    public async Task ProgramPut_BumpsVersion_AndRefusesInvalidSettings()
    {
        IProgramGrain program = Grains.GetGrain<IProgramGrain>(_program);

        ProgramConfig v1 = await program.Put(new ProgramSettings("Shop", "USD", 2, 1));
        ProgramConfig v2 = await program.Put(new ProgramSettings("Shop", "USD", 2, 3));
        await fixture.DeactivateAllAsync();

        Assert.Equal((1L, 2L), (v1.Version, v2.Version));
        Assert.Equal(v2, await program.Get());
        await Assert.ThrowsAsync<ArgumentException>(() => program.Put(new ProgramSettings("Shop", "usd", 2, 1)));
    }

    private async Task CreateProgramAsync() =>
        await Grains.GetGrain<IProgramGrain>(_program).Put(new ProgramSettings("Test shop", "USD", 2, 2));

    private async Task<IMemberGrain> EnrolAsync(string memberId)
    {
        await CreateProgramAsync();
        IMemberGrain member = Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, memberId));
        EnrolmentResult result = await member.Enrol(new Enrolment(_program, memberId, null));
        Assert.Equal(LoyaltyError.None, result.Error);
        return member;
    }
}

public sealed class SqliteMemberGrainTests(SqliteClusterFixture fixture) : MemberGrainTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresMemberGrainTests(PostgresClusterFixture fixture) : MemberGrainTests(fixture), IClassFixture<PostgresClusterFixture>;
