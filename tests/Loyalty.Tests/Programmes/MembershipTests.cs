using Loyalty.Storage;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// Paid membership over gRPC on both databases: a free trial, a payment confirmed by billing that
/// renews it, the plan's benefits (multiplier, reserved campaign and reward, perks, early access),
/// cancellation at the term's end, the lapse on time through the due schedule, a new start, and
/// the members rebuilt from the ledger.
/// </summary>
public sealed class MembershipTests
{
    private const string Program = "prime";
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ATrialThenPayments_GiveThePlansBenefits_UntilTheTermLapsesOnTime(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership"), clock, "--Schedule:PollIntervalMs=50");
        try
        {
            var redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "p" });
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "q" });

            V1.MembershipResponse trial = await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "p", PlanId = "prime" });
            V1.MembershipResponse trialAgain = await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "p", PlanId = "prime" });
            V1.PurchaseAck member = await engine.Purchases.AccrueAsync(Buy("p", "p-1", 100_00));
            V1.PurchaseAck nonMember = await engine.Purchases.AccrueAsync(Buy("q", "q-1", 100_00));

            Assert.Equal((V1.AckStatus.Accepted, V1.MembershipStatus.Trial), (trial.Status, trial.Membership.Status));
            Assert.Equal(Start.AddDays(30), trial.Membership.TermEndsAt.ToDateTimeOffset());
            Assert.True(trial.Membership.EarlyAccess);
            Assert.Equal(new[] { "free delivery" }, trial.Membership.Perks);
            Assert.Equal((V1.AckStatus.Duplicate, 0L), (trialAgain.Status, trialAgain.Sequence));
            Assert.Equal("base=100 prime=50 members-week=20", Describe(member));
            Assert.Equal("base=100", Describe(nonMember));

            // Billing confirms the first payment during the trial: the paid month follows the trial.
            V1.MembershipResponse paid = await PayAsync(engine, "p", "pay-1", 14_99);
            V1.MembershipResponse resent = await PayAsync(engine, "p", "pay-1", 14_99);
            RpcException reused = await RefusedAsync(PayAsync(engine, "p", "pay-1", 15_99));
            RpcException wrongFee = await RefusedAsync(PayAsync(engine, "p", "pay-2", 10_00));
            RpcException unknownPlan = await RefusedAsync(PayAsync(engine, "p", "pay-3", 14_99, plan: "gold"));
            RpcException noTrialLeft = await RefusedAsync(engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "p", PlanId = "plus" }).ResponseAsync);

            Assert.Equal((V1.AckStatus.Accepted, V1.MembershipStatus.Active), (paid.Status, paid.Membership.Status));
            Assert.Equal(Start.AddDays(30).AddMonths(1), paid.Membership.TermEndsAt.ToDateTimeOffset());
            Assert.Equal((V1.AckStatus.Duplicate, paid.Sequence), (resent.Status, resent.Sequence));
            Assert.Equal(StatusCode.AlreadyExists, reused.StatusCode);
            Assert.Equal((StatusCode.FailedPrecondition, true), (wrongFee.StatusCode, wrongFee.Status.Detail.Contains("does not match plan prime's fee", StringComparison.Ordinal)));
            Assert.Equal(StatusCode.NotFound, unknownPlan.StatusCode);
            Assert.Equal((StatusCode.FailedPrecondition, true), (noTrialLeft.StatusCode, noTrialLeft.Status.Detail.Contains("plan plus has no free trial", StringComparison.Ordinal)));
            RpcException otherPlan = await RefusedAsync(PayAsync(engine, "p", "pay-5", 99_00, plan: "plus"));
            Assert.Equal((StatusCode.FailedPrecondition, true), (otherPlan.StatusCode, otherPlan.Status.Detail.Contains("holds plan prime", StringComparison.Ordinal)));

            V1.ListRewardsResponse asMember = await redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "p" });
            V1.ListRewardsResponse asOther = await redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "q" });
            Assert.True(asMember.Rewards.Single(r => r.Reward.Id == "deal").Redeemable);
            Assert.Equal(V1.RewardBlock.Plan, asOther.Rewards.Single(r => r.Reward.Id == "deal").BlockedBy);
            Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = Program, MemberId = "q", TransactionId = "q-deal", RewardId = "deal" }).ResponseAsync)).StatusCode);

            // Cancelled: the benefits last to the term's end; then the due schedule records the lapse.
            V1.MembershipResponse cancelled = await engine.Members.CancelMembershipAsync(new V1.CancelMembershipRequest { ProgramId = Program, MemberId = "p", Reason = "customer request" });
            RpcException nothingToCancel = await RefusedAsync(engine.Members.CancelMembershipAsync(new V1.CancelMembershipRequest { ProgramId = Program, MemberId = "q", Reason = "x" }).ResponseAsync);
            Assert.Equal((V1.MembershipStatus.Cancelled, paid.Membership.TermEndsAt), (cancelled.Membership.Status, cancelled.Membership.TermEndsAt));
            Assert.Equal(StatusCode.FailedPrecondition, nothingToCancel.StatusCode);
            clock.SetUtcNow(paid.Membership.TermEndsAt.ToDateTimeOffset().AddDays(-1));
            Assert.Equal("base=100 prime=50", Describe(await engine.Purchases.AccrueAsync(Buy("p", "p-2", 100_00, clock.GetUtcNow()))));

            clock.SetUtcNow(paid.Membership.TermEndsAt.ToDateTimeOffset().AddSeconds(1));
            await WaitForEntriesAsync(engine, Program, "p", (int)V1.LedgerEntryKind.MembershipLapsed);
            V1.Member lapsed = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "p" });
            Assert.Equal((V1.MembershipStatus.Lapsed, false, 0), (lapsed.Membership.Status, lapsed.Membership.EarlyAccess, lapsed.Membership.Perks.Count));
            Assert.Equal(
                new[] { V1.LedgerEntryKind.MembershipStarted, V1.LedgerEntryKind.MembershipRenewed, V1.LedgerEntryKind.MembershipCancelled, V1.LedgerEntryKind.MembershipLapsed },
                lapsed.Membership.History.Select(h => h.Kind));
            Assert.Equal(("pay-1", 14_99L), (lapsed.Membership.History[1].PaymentId, lapsed.Membership.History[1].AmountMinor));
            Assert.Equal("base=100", Describe(await engine.Purchases.AccrueAsync(Buy("p", "p-3", 100_00, clock.GetUtcNow()))));

            // p cancelled before its term ended: a payment a day after the lapse (within the 7 grace
            // days) is a new membership from now, not a renewal; the trial was used.
            clock.Advance(TimeSpan.FromDays(1));
            Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "p", PlanId = "prime" }).ResponseAsync)).StatusCode);
            V1.MembershipResponse again = await PayAsync(engine, "p", "pay-4", 14_99);
            Assert.Equal((V1.MembershipStatus.Active, clock.GetUtcNow().AddMonths(1)), (again.Membership.Status, again.Membership.TermEndsAt.ToDateTimeOffset()));
            Assert.Equal(V1.LedgerEntryKind.MembershipStarted, again.Membership.History[^1].Kind);
            // A till's purchase from before this membership began, sent late, earns without the plan.
            Assert.Equal("base=100", Describe(await engine.Purchases.AccrueAsync(Buy("p", "p-offline", 100_00, clock.GetUtcNow().AddHours(-2)))));
            Assert.Equal("base=100 prime=50", Describe(await engine.Purchases.AccrueAsync(Buy("p", "p-4", 100_00, clock.GetUtcNow().AddMinutes(-1)))));

            // q's membership is not cancelled: billing's renewal, confirmed a day after its term
            // ended and the lapse was written, renews it from that end, its months anchored as before.
            V1.MembershipResponse qStarted = await PayAsync(engine, "q", "q-pay-1", 14_99);
            clock.SetUtcNow(qStarted.Membership.TermEndsAt.ToDateTimeOffset().AddSeconds(1));
            await WaitForEntriesAsync(engine, Program, "q", (int)V1.LedgerEntryKind.MembershipLapsed);
            clock.Advance(TimeSpan.FromDays(1));
            V1.MembershipResponse qLate = await PayAsync(engine, "q", "q-pay-2", 14_99);
            Assert.Equal((V1.MembershipStatus.Active, qStarted.Membership.StartedAt.ToDateTimeOffset().AddMonths(2)), (qLate.Membership.Status, qLate.Membership.TermEndsAt.ToDateTimeOffset()));
            Assert.Equal(
                new[] { V1.LedgerEntryKind.MembershipStarted, V1.LedgerEntryKind.MembershipLapsed, V1.LedgerEntryKind.MembershipRenewed },
                qLate.Membership.History.Select(h => h.Kind));

            // Past the 7 grace days after its next end, a payment no longer renews q's membership: it starts a new one, from now.
            clock.SetUtcNow(qLate.Membership.TermEndsAt.ToDateTimeOffset().AddDays(8));
            await WaitForEntriesAsync(engine, Program, "q", (int)V1.LedgerEntryKind.MembershipLapsed, 2);
            V1.MembershipResponse qAfterGrace = await PayAsync(engine, "q", "q-pay-3", 14_99);
            Assert.Equal((V1.LedgerEntryKind.MembershipStarted, clock.GetUtcNow().AddMonths(1)), (qAfterGrace.Membership.History[^1].Kind, qAfterGrace.Membership.TermEndsAt.ToDateTimeOffset()));

            // Erasure keeps the payments and forgets the typed reason.
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "p", Reason = "ticket 3" });
            Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'p' AND kind = 26 AND reason <> 'erased'"));
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "p", "q");
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ATrialUsedByADuplicateAccount_IsUsedForTheSurvivorOfTheirMerge(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "trialmerge"), clock, "--Schedule:PollIntervalMs=50");
        try
        {
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "s" });
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "d" });
            V1.MembershipResponse trial = await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "d", PlanId = "prime" });
            clock.SetUtcNow(trial.Membership.TermEndsAt.ToDateTimeOffset().AddSeconds(1));
            await WaitForEntriesAsync(engine, Program, "d", (int)V1.LedgerEntryKind.MembershipLapsed);
            // Billing may still renew the lapsed trial for 7 days: the merge waits for them.
            RpcException inGrace = await RefusedAsync(engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = "s", DuplicateId = "d", Reason = "duplicate" }).ResponseAsync);
            Assert.Equal((StatusCode.FailedPrecondition, true), (inGrace.StatusCode, inGrace.Status.Detail.Contains("billing may renew it until", StringComparison.Ordinal)));
            clock.SetUtcNow(trial.Membership.TermEndsAt.ToDateTimeOffset().AddDays(7));

            await engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = "s", DuplicateId = "d", Reason = "duplicate" });
            RpcException second = await RefusedAsync(engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "s", PlanId = "prime" }).ResponseAsync);

            Assert.Equal(V1.MembershipStatus.Trial, trial.Membership.Status);
            Assert.Equal((StatusCode.FailedPrecondition, true), (second.StatusCode, second.Status.Detail.Contains("already had plan prime's free trial", StringComparison.Ordinal)));
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "s");
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AnOldPaymentResent_IsAnsweredAsWhatItWas_AndAMemberHoldingAPlanIsNotMergedAway(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership-resend"), clock);
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "p" });
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "s" });
        V1.MembershipResponse paid = await PayAsync(engine, "p", "old-pay", 14_99);

        // Enough later changes that the member's memory of recent transactions no longer holds the payment, and a new fee.
        for (int i = 0; i < 40; i++)
        {
            await engine.Purchases.AccrueAsync(Buy("p", $"later-{i}", 1_00));
        }

        V1.PutProgramRequest dearer = Settings();
        dearer.Settings.MembershipPlans[0].FeeMinor = 19_99;
        await engine.Programs.PutProgramAsync(dearer);
        V1.MembershipResponse resent = await PayAsync(engine, "p", "old-pay", 14_99);
        RpcException merge = await RefusedAsync(engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = "s", DuplicateId = "p", Reason = "duplicate" }).ResponseAsync);

        Assert.Equal((V1.AckStatus.Duplicate, paid.Sequence), (resent.Status, resent.Sequence));
        Assert.Equal((StatusCode.FailedPrecondition, true), (merge.StatusCode, merge.Status.Detail.Contains("holds membership plan prime", StringComparison.Ordinal)));
        Assert.Equal(1, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND kind IN (24, 25)"));
        Assert.Equal("", (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "p" })).MergedInto);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AFeeRaised_RenewsAtThePriceLastPaidOrTheNewFee_ButANewMembershipPaysTheNewFee(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership-fee"), clock, "--Schedule:PollIntervalMs=50");
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "p" });
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "n" });
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "t" });
        V1.MembershipResponse started = await PayAsync(engine, "p", "p-pay-1", 14_99);
        await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "t", PlanId = "prime" });

        V1.PutProgramRequest dearer = Settings();
        dearer.Settings.MembershipPlans[0].FeeMinor = 19_99;
        await engine.Programs.PutProgramAsync(dearer);
        V1.MembershipResponse keptPrice = await PayAsync(engine, "p", "p-pay-2", 14_99);
        RpcException otherPrice = await RefusedAsync(PayAsync(engine, "p", "p-pay-4", 17_99));
        V1.MembershipResponse newFee = await PayAsync(engine, "p", "p-pay-3", 19_99);
        RpcException newAtOldPrice = await RefusedAsync(PayAsync(engine, "n", "n-pay-1", 14_99));
        RpcException trialAtOldPrice = await RefusedAsync(PayAsync(engine, "t", "t-pay-1", 14_99));
        // An earlier membership's price does not carry over to a new one: o paid 14.99 once, its
        // term lapsed past the grace, and it starts the plan's trial now.
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "o" });
        await engine.Programs.PutProgramAsync(Settings());
        V1.MembershipResponse oStarted = await PayAsync(engine, "o", "o-pay-1", 14_99);
        await engine.Programs.PutProgramAsync(dearer);
        clock.SetUtcNow(oStarted.Membership.TermEndsAt.ToDateTimeOffset().AddDays(8));
        // A trial waits for the last membership's lapse to be recorded (moments, by the schedule).
        await WaitForEntriesAsync(engine, Program, "o", (int)V1.LedgerEntryKind.MembershipLapsed);
        await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "o", PlanId = "prime" });
        RpcException oldPriceAfterTrial = await RefusedAsync(PayAsync(engine, "o", "o-pay-2", 14_99));
        Assert.Equal((StatusCode.FailedPrecondition, false), (oldPriceAfterTrial.StatusCode, oldPriceAfterTrial.Status.Detail.Contains("last paid", StringComparison.Ordinal)));

        Assert.Equal((V1.LedgerEntryKind.MembershipRenewed, started.Membership.TermEndsAt.ToDateTimeOffset().AddMonths(1)),
            (keptPrice.Membership.History[^1].Kind, keptPrice.Membership.TermEndsAt.ToDateTimeOffset()));
        Assert.Equal((V1.AckStatus.Accepted, 19_99L), (newFee.Status, newFee.Membership.History[^1].AmountMinor));
        // The newest payment's price is the one kept: 19.99 now, so 14.99 no longer renews.
        Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(PayAsync(engine, "p", "p-pay-5", 14_99))).StatusCode);
        Assert.Equal((StatusCode.FailedPrecondition, true), (otherPrice.StatusCode, otherPrice.Status.Detail.Contains("nor the price the member's membership was last paid at (1499 USD)", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.FailedPrecondition, false), (newAtOldPrice.StatusCode, newAtOldPrice.Status.Detail.Contains("last paid", StringComparison.Ordinal)));
        Assert.Equal(StatusCode.FailedPrecondition, trialAtOldPrice.StatusCode);
        Assert.Equal(2, await EntriesAsync(engine, Program, "p", (int)V1.LedgerEntryKind.MembershipRenewed));
        Assert.Equal(0, await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}' AND member_id IN ('n', 't') AND txn_id IN ('n-pay-1', 't-pay-1')"));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task APaymentOrTrialBeforeTheLastTermsLapseIsWritten_WritesTheLapseFirst(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        // The schedule does not poll during the test: no wake writes a lapse.
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership-lapse-first"), clock, "--Schedule:PollIntervalMs=3600000");
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "t" });
        await PayAsync(engine, "m", "m-pay-1", 14_99);
        V1.MembershipResponse yearly = await PayAsync(engine, "t", "t-pay-1", 99_00, "plus");
        clock.SetUtcNow(yearly.Membership.TermEndsAt.ToDateTimeOffset().AddMinutes(1));

        V1.MembershipResponse other = await PayAsync(engine, "m", "m-pay-2", 99_00, "plus");
        V1.MembershipResponse trial = await engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = Program, MemberId = "t", PlanId = "prime" });

        // Before: plus and the trial started over the unrecorded lapses, which were never written.
        Assert.Equal((V1.AckStatus.Accepted, "plus"), (other.Status, other.Membership.PlanId));
        Assert.Equal("prime", trial.Membership.PlanId);
        foreach (string member in new[] { "m", "t" })
        {
            List<int> kinds = await Sql.RowsAsync(engine.Storage, $"SELECT kind FROM ledger_entries WHERE program_id = '{Program}' AND member_id = '{member}' ORDER BY seq", r => r.GetInt32(0));
            Assert.Equal([(int)LedgerEntryKind.MembershipStarted, (int)LedgerEntryKind.MembershipLapsed, (int)LedgerEntryKind.MembershipStarted], kinds.Where(k => k is (int)LedgerEntryKind.MembershipStarted or (int)LedgerEntryKind.MembershipLapsed));
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task APurchaseFromATermThatLapsedSince_SentLate_EarnsThePlansBenefits_OneFromAfterItDoesNot(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership-late"), clock, "--Schedule:PollIntervalMs=50");
        await engine.Programs.PutProgramAsync(Settings());
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        V1.MembershipResponse paid = await PayAsync(engine, "m", "m-pay-1", 14_99);
        DateTimeOffset end = paid.Membership.TermEndsAt.ToDateTimeOffset();

        clock.SetUtcNow(end.AddDays(1));
        await WaitForEntriesAsync(engine, Program, "m", (int)V1.LedgerEntryKind.MembershipLapsed);
        V1.PurchaseAck inTheTerm = await engine.Purchases.AccrueAsync(Buy("m", "m-offline-1", 100_00, end.AddHours(-1)));
        V1.PurchaseAck afterIt = await engine.Purchases.AccrueAsync(Buy("m", "m-offline-2", 100_00, end.AddHours(1)));

        Assert.Equal("base=100 prime=50", Describe(inTheTerm));
        Assert.Equal("base=100", Describe(afterIt));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AnErasedMembersMembership_LapsesAtItsTermsEnd(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "membership-erased"), clock, "--Schedule:PollIntervalMs=50");
        try
        {
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "e" });
            V1.MembershipResponse paid = await PayAsync(engine, "e", "e-pay-1", 14_99);
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "e", Reason = "ticket 4" });

            clock.SetUtcNow(paid.Membership.TermEndsAt.ToDateTimeOffset().AddSeconds(1));
            await WaitForEntriesAsync(engine, Program, "e", (int)V1.LedgerEntryKind.MembershipLapsed);
            V1.Member erased = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "e" });
            RpcException renewal = await RefusedAsync(PayAsync(engine, "e", "e-pay-2", 14_99));

            Assert.Equal(V1.MembershipStatus.Lapsed, erased.Membership.Status);
            Assert.Equal(V1.LedgerEntryKind.MembershipLapsed, erased.Membership.History[^1].Kind);
            Assert.Equal((StatusCode.FailedPrecondition, true), (renewal.StatusCode, renewal.Status.Detail.Contains("erased", StringComparison.Ordinal)));
            engine = await Replay.AssertRebuiltFromLedgerAsync(engine, clock, Program, "e");
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AMemberErasedBeforeLapsesWereScheduledForErasedMembers_IsBroughtDueByTheUpgrade(Backend backend)
    {
        StorageOptions db = TestDatabases.Create(backend, "membership-erased-upgrade");
        var clock = new FakeTimeProvider(Start);
        V1.MembershipResponse paid;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock))
        {
            await engine.Programs.PutProgramAsync(Settings());
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "e" });
            paid = await PayAsync(engine, "e", "e-pay-1", 14_99);
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "e", Reason = "ticket 7" });
        }

        // As a database written by the version before: no due row, and migration 18 not yet run.
        await Sql.ExecuteAsync(db, "DELETE FROM member_due");
        await Sql.ExecuteAsync(db, "DELETE FROM loyalty_schema_versions WHERE version = 18");
        clock.SetUtcNow(paid.Membership.TermEndsAt.ToDateTimeOffset().AddDays(1));
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db, clock, "--Schedule:PollIntervalMs=50"))
        {
            await WaitForEntriesAsync(engine, Program, "e", (int)V1.LedgerEntryKind.MembershipLapsed);
        }
    }

    /// <summary>Prime: $14.99 a month, a 30-day trial, x1.5 points, a members' week campaign and a members' deal; Plus: no trial.</summary>
    private static V1.PutProgramRequest Settings()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        V1.ProgramSettings s = request.Settings;
        s.MembershipPlans.Add(new V1.MembershipPlan { Id = "prime", Name = "Prime", FeeMinor = 14_99, TermMonths = 1, TrialDays = 30, MultiplierBp = 15_000, Perks = { "free delivery" }, EarlyAccess = true });
        s.MembershipPlans.Add(new V1.MembershipPlan { Id = "plus", Name = "Plus", FeeMinor = 99_00, TermMonths = 12 });
        s.Campaigns.Add(new V1.Campaign
        {
            Id = "members-week", Name = "Members' week", BonusPoints = 20, Plans = { "prime" },
            StartsAt = Timestamp.FromDateTimeOffset(Start.AddDays(-1)), EndsAt = Timestamp.FromDateTimeOffset(Start.AddDays(7)),
        });
        s.Rewards.Add(new V1.Reward { Id = "deal", Name = "Members' deal", Kind = V1.RewardKind.Discount, PointsPrice = 10, ValueMinor = 5_00, Plans = { "prime" } });
        return request;
    }

    private static Task<V1.MembershipResponse> PayAsync(InProcessEngine engine, string member, string payment, long amountMinor, string plan = "prime") =>
        engine.Members.ConfirmMembershipPaymentAsync(new V1.ConfirmMembershipPaymentRequest
        {
            ProgramId = Program, MemberId = member, PaymentId = payment, PlanId = plan, AmountMinor = amountMinor, Currency = "USD",
        }).ResponseAsync;

    private static V1.Purchase Buy(string member, string txn, long amountMinor, DateTimeOffset? at = null)
    {
        V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(at ?? Start);
        return purchase;
    }

    private static string Describe(V1.PurchaseAck ack) =>
        string.Join(" ", ack.Breakdown.Components.Where(c => c.Points != 0).Select(c => $"{(c.Kind == V1.ComponentKind.Base ? "base" : c.Code)}={c.Points}"));

}
