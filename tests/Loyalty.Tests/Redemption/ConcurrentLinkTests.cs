using Loyalty.Grains;
using Loyalty.Storage;
using Microsoft.Extensions.DependencyInjection;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Redemption;

/// <summary>
/// Changes that touch two members, sent at the same moment: opposite referral links, rings of
/// three to five, opposite merges and rings of merges. No interleaving may make a cycle, strand or
/// double points, or reward one side of a referral without the other.
/// </summary>
public abstract class ConcurrentLinkTests(ClusterFixture fixture)
{
    private const int PairsCount = 150;
    private const int RingsPerSize = 20;
    private static readonly TimeSpan SettleWaitMax = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StepHeldMax = TimeSpan.FromSeconds(120);

    private readonly string _program = "c" + Guid.NewGuid().ToString("N")[..10];

    private static ProgramSettings Shop => new("Shop", "USD", 2, 1, Referrals: new ReferralPolicy(ReferrerPoints: 500, ReferredPoints: 200, MinPurchaseMinor: 10_00));

    [Fact]
    public async Task OppositeReferrals_AtOnce_LinkExactlyOneWay_AndRewardBothSidesOrNeither()
    {
        await PutAsync();
        string[] xs = [.. Enumerable.Range(0, PairsCount).Select(i => $"x{i}")], ys = [.. Enumerable.Range(0, PairsCount).Select(i => $"y{i}")];
        await EnrolAllAsync([.. xs, .. ys]);

        MemberResult[] results = await Task.WhenAll(xs.Zip(ys).SelectMany(p => new[]
        {
            Member(p.First).SetReferrer(p.Second, null),
            Member(p.Second).SetReferrer(p.First, null),
        }));

        for (int i = 0; i < PairsCount; i++)
        {
            (MemberResult there, MemberResult back) = (results[2 * i], results[2 * i + 1]);
            Assert.Equal(1, new[] { there, back }.Count(r => r.Error == LoyaltyError.None));
            MemberResult refused = there.Error == LoyaltyError.None ? back : there;
            Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
            Assert.Contains("would close a referral cycle", refused.ErrorMessage, StringComparison.Ordinal);
        }

        string[] all = [.. xs, .. ys];
        await AssertNoCycleAndLinksMirroredAsync(all);
        await Task.WhenAll(all.Select(m => Member(m).Accrue(Buy(m, "q-" + m)).AsTask()));
        await AssertRewardsBothSidesOrNeitherAsync(all);
    }

    [Fact]
    public async Task AReferralAndTheMembersFirstPurchase_AtOnce_LinkBothSidesOrNeither()
    {
        await PutAsync();
        string[] referred = [.. Enumerable.Range(0, PairsCount).Select(i => $"n{i}")], referrers = [.. Enumerable.Range(0, PairsCount).Select(i => $"f{i}")];
        string[] all = [.. referred, .. referrers];
        await EnrolAllAsync(all);
        await Task.WhenAll(referrers.Select(m => Member(m).Accrue(Buy(m, "q-" + m)).AsTask()));

        // A till's first purchase arrives while the member's referral is being linked at the desk:
        // pair by pair (the desk makes one link at a time), each purchase 0 to 10 ms after its link
        // was asked for, so that some land while the link is half-way.
        var linked = new MemberResult[PairsCount];
        var bought = new AccrualResult[PairsCount];
        for (int i = 0; i < PairsCount; i++)
        {
            Task<MemberResult> link = Member(referred[i]).SetReferrer(referrers[i], null);
            await Task.Delay(TimeSpan.FromMilliseconds(i % 11));
            bought[i] = await Member(referred[i]).Accrue(Buy(referred[i], "q-" + referred[i]));
            linked[i] = await link;
        }

        Assert.All(bought, b => Assert.Equal(AccrualStatus.Accepted, b.Status));
        foreach (MemberResult refused in linked.Where(r => r.Error != LoyaltyError.None))
        {
            // Only because the purchase came first: the link is then refused whole, on both sides.
            Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
            Assert.Contains("has already made a purchase", refused.ErrorMessage, StringComparison.Ordinal);
        }

        await AssertNoCycleAndLinksMirroredAsync(all);
        await AssertRewardsBothSidesOrNeitherAsync(all);
    }

    [Fact]
    public async Task RingsOfThreeToFive_AtOnce_NeverCloseACycle()
    {
        await PutAsync();
        var rings = new List<string[]>();
        for (int size = 3; size <= 5; size++)
        {
            for (int r = 0; r < RingsPerSize; r++)
            {
                rings.Add([.. Enumerable.Range(0, size).Select(i => $"r{size}-{r}-{i}")]);
            }
        }

        await EnrolAllAsync([.. rings.SelectMany(r => r)]);

        MemberResult[][] results = await Task.WhenAll(rings.Select(ring =>
            Task.WhenAll(ring.Select((m, i) => Member(m).SetReferrer(ring[(i + 1) % ring.Length], null)))));

        for (int r = 0; r < rings.Count; r++)
        {
            // Every link but the one that would close the ring.
            Assert.Equal(rings[r].Length - 1, results[r].Count(x => x.Error == LoyaltyError.None));
            Assert.Contains("would close a referral cycle", Assert.Single(results[r], x => x.Error != LoyaltyError.None).ErrorMessage, StringComparison.Ordinal);
        }

        await AssertNoCycleAndLinksMirroredAsync([.. rings.SelectMany(r => r)]);
    }

    [Fact]
    public async Task OppositeMerges_AtOnce_MergeExactlyOneWay_AndConservePoints_AcrossARestart()
    {
        await PutAsync();
        string[] xs = [.. Enumerable.Range(0, PairsCount).Select(i => $"mx{i}")], ys = [.. Enumerable.Range(0, PairsCount).Select(i => $"my{i}")];
        string[] all = [.. xs, .. ys];
        await EnrolAllAsync(all);
        await Task.WhenAll(all.Select((m, i) => Member(m).Accrue(Buy(m, "p-" + m, (i + 1) * 1_00)).AsTask()));
        long before = await TotalBalanceAsync(all);

        MemberResult[] results = await Task.WhenAll(xs.Zip(ys).SelectMany(p => new[]
        {
            Member(p.First).MergeFrom(p.Second, "duplicate"),
            Member(p.Second).MergeFrom(p.First, "duplicate"),
        }));

        for (int i = 0; i < PairsCount; i++)
        {
            Assert.Equal(1, new[] { results[2 * i], results[2 * i + 1] }.Count(r => r.Error == LoyaltyError.None));
            (string survivor, string duplicate) = results[2 * i].Error == LoyaltyError.None ? (xs[i], ys[i]) : (ys[i], xs[i]);
            MemberResult refused = results[2 * i].Error == LoyaltyError.None ? results[2 * i + 1] : results[2 * i];
            Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
            Assert.Contains($"was merged into '{survivor}'", refused.ErrorMessage, StringComparison.Ordinal);
            MemberView gone = (await Member(duplicate).Get())!;
            Assert.Equal((survivor, 0L), (gone.MergedInto, gone.Balance.Value));
        }

        Assert.Equal(before, await TotalBalanceAsync(all));
        await fixture.DeactivateAllAsync();
        Assert.Equal(before, await TotalBalanceAsync(all));
        // The ledger agrees: a merge moves points out of one member and into another, never more.
        Assert.Equal(before, await Sql.ScalarAsync(fixture.Storage, $"SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    [Fact]
    public async Task RingsOfMerges_AtOnce_LeaveEveryPointWithAnOpenMember_AndNoPointerLoop()
    {
        await PutAsync();
        var rings = new List<string[]>();
        for (int size = 3; size <= 5; size++)
        {
            for (int r = 0; r < RingsPerSize / 2; r++)
            {
                rings.Add([.. Enumerable.Range(0, size).Select(i => $"g{size}-{r}-{i}")]);
            }
        }

        string[] all = [.. rings.SelectMany(r => r)];
        await EnrolAllAsync(all);
        await Task.WhenAll(all.Select(m => Member(m).Accrue(Buy(m, "p-" + m, 50_00)).AsTask()));
        long before = await TotalBalanceAsync(all);

        await Task.WhenAll(rings.SelectMany(ring => ring.Select((m, i) => Member(m).MergeFrom(ring[(i + 1) % ring.Length], "duplicate"))));

        foreach (string[] ring in rings)
        {
            Dictionary<string, MemberView> views = (await Task.WhenAll(ring.Select(async m => (await Member(m).Get())!))).ToDictionary(v => v.MemberId);
            Assert.Contains(views.Values, v => v.MergedInto is null);
            Assert.Equal(ring.Length * 50L, views.Values.Sum(v => v.Balance.Value));
            foreach (MemberView v in views.Values.Where(v => v.MergedInto is not null))
            {
                // A merged-away member is empty, and its pointers lead to an open member without looping.
                Assert.Equal(0L, v.Balance.Value);
                var seen = new HashSet<string> { v.MemberId };
                string at = v.MergedInto!;
                while (views[at].MergedInto is { } next)
                {
                    Assert.True(seen.Add(at), $"merge pointers loop through {at}");
                    at = next;
                }
            }
        }

        Assert.Equal(before, await TotalBalanceAsync(all));
    }

    [Fact]
    public async Task Merge_ThatWouldCloseAReferralCycle_IsRefused_AndWritesNothing()
    {
        await PutAsync();
        await EnrolAllAsync(["a"]);
        await Member("b").Enrol(new Enrolment(_program, "b", "a"));
        await Member("c").Enrol(new Enrolment(_program, "c", "b"));
        long entries = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");

        // c's referrer b was referred by a: merged into c, a's referral of b would point at c.
        MemberResult merged = await Member("c").MergeFrom("a", "duplicate");

        Assert.Equal(LoyaltyError.FailedPrecondition, merged.Error);
        Assert.Contains("would close a referral cycle: c ← b ← c", merged.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(entries, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    [Fact]
    public async Task AMerge_WhoseChainCannotBeFollowedToItsEnd_IsRefused_RatherThanCloseACycleBeyondIt()
    {
        await PutAsync();
        const int depth = 40;
        string[] above = [.. Enumerable.Range(0, depth + 1).Select(i => $"a{i}")], below = [.. Enumerable.Range(0, depth + 1).Select(i => $"d{i}")];
        await EnrolAllAsync([.. above, .. below, "x"]);
        for (int i = 1; i <= depth; i++)
        {
            Assert.Equal(LoyaltyError.None, (await Member(above[i]).SetReferrer(above[i - 1], null)).Error);
            Assert.Equal(LoyaltyError.None, (await Member(below[i]).SetReferrer(below[i - 1], null)).Error);
        }

        // d0 into a40: d1 now names a40, so d40 has 80 referrers above it, more than a walk follows.
        Assert.Equal(LoyaltyError.None, (await Member(above[depth]).MergeFrom(below[0], "duplicate")).Error);

        // a0 has no referrer and would take d40's, d39, whose chain leads back to a0 after 80 steps.
        MemberResult merged = await Member(above[0]).MergeFrom(below[depth], "duplicate");

        Assert.Equal(LoyaltyError.FailedPrecondition, merged.Error);
        Assert.Equal($"merging 'd{depth}' into 'a0' cannot be checked for a referral cycle: the referral chain above 'a0' is longer than {Limits.ReferralChainDepthMax}", merged.ErrorMessage);
        Assert.Null((await Member(above[0]).Get())!.ReferredBy);
        // What cannot change that chain still goes through: a survivor that keeps its referrer and a
        // duplicate that referred nobody; and a merge already made, asked for again.
        Assert.Equal(LoyaltyError.None, (await Member(below[depth]).MergeFrom("x", "duplicate")).Error);
        Assert.Equal(LoyaltyError.None, (await Member(above[depth]).MergeFrom(below[0], "duplicate")).Error);
        await AssertNoCycleAndLinksMirroredAsync([.. above, .. below[1..]]);
    }

    [Fact]
    public async Task AMemberAskedToLetGoToItself_IsRefused_AndKeepsItsPoints()
    {
        await PutAsync();
        await EnrolAllAsync(["s"]);
        await Member("s").Accrue(Buy("s", "p1"));

        (MergeTransfer? transfer, LoyaltyError error, string? message) = await Member("s").Detach("s", Loyalty.Grains.Headroom.VolumeMax);

        Assert.Equal((null, LoyaltyError.InvalidArgument, "a member cannot be merged into itself"), (transfer, error, message));
        MemberView kept = (await Member("s").Get())!;
        Assert.Equal((null, 20L), (kept.MergedInto, kept.Balance.Value));
    }

    [Fact]
    public async Task Referral_ByAClosedMember_IsRefusedWithTheRealReason()
    {
        await PutAsync();
        await EnrolAllAsync(["erased", "kept", "gone"]);
        await Member("erased").Erase("request");
        await Member("kept").MergeFrom("gone", "duplicate");

        EnrolmentResult byErased = await Member("n1").Enrol(new Enrolment(_program, "n1", "erased"));
        EnrolmentResult byMerged = await Member("n2").Enrol(new Enrolment(_program, "n2", "gone"));

        Assert.Equal((LoyaltyError.FailedPrecondition, LoyaltyError.FailedPrecondition), (byErased.Error, byMerged.Error));
        Assert.Contains("member 'erased' was erased", byErased.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("member 'gone' was merged into 'kept'; use 'kept'", byMerged.ErrorMessage, StringComparison.Ordinal);
        Assert.DoesNotContain("cap", byErased.ErrorMessage + byMerged.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Merges_BeyondTheLimit_AreRefusedBeforeTheDuplicateLetsGo()
    {
        await PutAsync();
        string[] duplicates = [.. Enumerable.Range(0, Limits.MergesPerMemberMax + 1).Select(i => $"d{i}")];
        await EnrolAllAsync(["keeper", .. duplicates]);
        await Member(duplicates[^1]).Accrue(Buy(duplicates[^1], "p-last"));
        foreach (string d in duplicates[..^1])
        {
            Assert.Equal(LoyaltyError.None, (await Member("keeper").MergeFrom(d, "duplicate")).Error);
        }

        MemberResult refused = await Member("keeper").MergeFrom(duplicates[^1], "duplicate");
        MemberView last = (await Member(duplicates[^1]).Get())!;

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Contains($"more than the {Limits.MergesPerMemberMax} one member may", refused.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal((null, 20L), (last.MergedInto, last.Balance.Value));
    }

    [Fact]
    public async Task AMergeCutShortAfterTheDuplicateLetGo_IsCompleted_EvenAtTheLimit()
    {
        await PutAsync();
        string[] duplicates = [.. Enumerable.Range(0, Limits.MergesPerMemberMax).Select(i => $"e{i}")];
        await EnrolAllAsync(["keeper", "late", .. duplicates]);
        await Member("late").Accrue(Buy("late", "p-late"));
        foreach (string d in duplicates[..^1])
        {
            Assert.Equal(LoyaltyError.None, (await Member("keeper").MergeFrom(d, "duplicate")).Error);
        }

        // "late" lets go to keeper and the merge stops there, as a crash would leave it; then keeper reaches the limit.
        Assert.NotNull((await Member("late").Detach("keeper", Loyalty.Grains.Headroom.VolumeMax)).Transfer);
        Assert.Equal(LoyaltyError.None, (await Member("keeper").MergeFrom(duplicates[^1], "duplicate")).Error);

        MemberResult completed = await Member("keeper").MergeFrom("late", "duplicate");

        Assert.Equal(LoyaltyError.None, completed.Error);
        Assert.Equal(Limits.MergesPerMemberMax + 1, completed.Member!.MergedFrom!.Count);
        Assert.Equal(20L, completed.Member.Balance.Value);
    }

    /// <summary>
    /// A desk whose engine dies releases the program's lock while the step it asked for goes on,
    /// on another engine. Here such a step links m0 under m1 (above m1 runs a chain back to the
    /// last member) and is held just after m1 recorded its side; meanwhile a newer desk links the
    /// last member under m0, its check reading m0 with no referrer yet. Before the desk's epoch,
    /// the old step then wrote m0's link and closed the ring. (A ring of two cannot be staged so:
    /// the newer desk's step would run on m1, held by the old step's write.)
    /// </summary>
    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    public async Task AStepOfADeskThatStopped_IsRefused_OnceANewerDeskHasReadTheMember_SoNoRingCloses(int ringSize)
    {
        await PutAsync();
        string[] ring = [.. Enumerable.Range(0, ringSize).Select(i => $"k{ringSize}-{i}")];
        await EnrolAllAsync(ring);
        for (int i = 1; i + 1 < ringSize; i++)
        {
            Assert.Equal(LoyaltyError.None, (await Member(ring[i]).SetReferrer(ring[i + 1], null)).Error);
        }

        // The old desk's step, held once m1 recorded its side, while the newer desk links the last member under m0.
        (MemberResult oldAnswer, MemberResult newer) = await WhileAStepOfADeadDeskIsHeldAsync(
            LedgerEntryKind.ReferralLink, ring[1],
            () => fixture.Grains.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_program, ring[0])).LinkReferrer(ring[1]),
            () => Member(ring[^1]).SetReferrer(ring[0], null));

        Assert.Equal(LoyaltyError.None, newer.Error);
        Assert.Equal(LoyaltyError.Unavailable, oldAnswer.Error);
        Assert.Contains("a newer change at the program's desk read this member", oldAnswer.ErrorMessage, StringComparison.Ordinal);
        Assert.Null((await Member(ring[0]).Get())!.ReferredBy);

        // m1's side, left by the old step, is withdrawn by the check its due schedule asks for.
        fixture.Clock.Advance(ReferralDecision.LinkCheckDelay + TimeSpan.FromSeconds(1));
        Assert.Equal(LoyaltyError.None, await fixture.Grains.GetGrain<IProgramLinksGrain>(_program).CheckReferralLinks(ring[1]));
        await AssertNoCycleAndLinksMirroredAsync(ring);
    }

    /// <summary>
    /// The same for an enrolment with a referrer: the old desk's step is held once the referrer
    /// recorded its side; a newer desk's link under the member to be enrolled reads it (and is
    /// refused, as it is not enrolled yet). The enrolment is then refused, nothing written.
    /// </summary>
    [Fact]
    public async Task AnEnrolmentStepOfADeskThatStopped_IsRefused_OnceANewerDeskHasReadTheMember()
    {
        await PutAsync();
        await EnrolAllAsync(["er", "ey"]);

        (MemberResult oldAnswer, MemberResult newer) = await WhileAStepOfADeadDeskIsHeldAsync(
            LedgerEntryKind.ReferralLink, "er",
            async () =>
            {
                EnrolmentResult enrolled = await fixture.Grains.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_program, "en")).EnrolReferred(new Enrolment(_program, "en", "er"));
                return new MemberResult(null, enrolled.Error, enrolled.ErrorMessage);
            },
            () => Member("ey").SetReferrer("en", null));

        Assert.Equal(LoyaltyError.NotFound, newer.Error);
        Assert.Equal(LoyaltyError.Unavailable, oldAnswer.Error);
        Assert.Contains("a newer change at the program's desk read this member", oldAnswer.ErrorMessage, StringComparison.Ordinal);
        Assert.Null(await Member("en").Get());
    }

    /// <summary>
    /// The same for a merge: the old desk's step recorded the merge's start at the survivor and is
    /// held there; a newer desk then links a member under the duplicate, reading it. The duplicate
    /// refuses to let go to the old step, and the merge, left open, is completed by the newer desk
    /// the survivor's due schedule asks (checked again for cycles), moving the new link with it.
    /// </summary>
    [Fact]
    public async Task AMergeStepOfADeskThatStopped_IsRefusedByTheDuplicate_OnceANewerDeskHasReadIt_AndTheMergeIsCompletedLater()
    {
        await PutAsync();
        await EnrolAllAsync(["ms", "md", "mx"]);

        (MemberResult oldAnswer, MemberResult newer) = await WhileAStepOfADeadDeskIsHeldAsync(
            LedgerEntryKind.MergeStarted, "ms",
            () => fixture.Grains.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_program, "ms")).MergeDuplicate("md", "duplicate"),
            () => Member("mx").SetReferrer("md", null));

        Assert.Equal(LoyaltyError.None, newer.Error);
        Assert.Equal(LoyaltyError.Unavailable, oldAnswer.Error);
        Assert.Contains("a newer change at the program's desk read this member", oldAnswer.ErrorMessage, StringComparison.Ordinal);
        Assert.True(string.IsNullOrEmpty((await Member("md").Get())!.MergedInto));

        Assert.Equal(LoyaltyError.None, await fixture.Grains.GetGrain<IProgramLinksGrain>(_program).CompleteMerge("ms"));
        MemberView survivor = (await Member("ms").Get())!, duplicate = (await Member("md").Get())!, referred = (await Member("mx").Get())!;
        Assert.Equal("ms", duplicate.MergedInto);
        Assert.Equal("ms", referred.ReferredBy);
        Assert.Contains("mx", survivor.Referrals);
    }

    /// <summary>
    /// As <see cref="AMergeStepOfADeskThatStopped_IsRefusedByTheDuplicate_OnceANewerDeskHasReadIt_AndTheMergeIsCompletedLater"/>,
    /// with the duplicate deactivated after the newer desk read it: its next activation has not
    /// seen that desk, and the ledger's batch leaves its letting go out (PostgreSQL, where several
    /// engines share the desk's lock; an SQLite engine's desk dies with its steps).
    /// </summary>
    protected async Task AMergeStepOfADeskThatStopped_IsRefused_EvenByANewActivationOfTheDuplicateAsync()
    {
        await PutAsync();
        await EnrolAllAsync(["ns", "nd", "nx"]);
        IManagementGrain management = fixture.Grains.GetGrain<IManagementGrain>(0);

        (MemberResult oldAnswer, MemberResult newer) = await WhileAStepOfADeadDeskIsHeldAsync(
            LedgerEntryKind.MergeStarted, "ns",
            () => fixture.Grains.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_program, "ns")).MergeDuplicate("nd", "duplicate"),
            () => Member("nx").SetReferrer("nd", null),
            async () =>
            {
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
                do
                {
                    await fixture.DeactivateAllAsync();
                    await Task.Delay(100);
                }
                while (await management.GetGrainActivationCount((GrainReference)Member("nd")) > 0 && DateTime.UtcNow < deadline);

                Assert.Equal(0, await management.GetGrainActivationCount((GrainReference)Member("nd")));
            });

        Assert.Equal(LoyaltyError.None, newer.Error);
        Assert.Equal(LoyaltyError.Unavailable, oldAnswer.Error);
        Assert.Contains("a newer change at the program's desk read this member", oldAnswer.ErrorMessage, StringComparison.Ordinal);
        Assert.True(string.IsNullOrEmpty((await Member("nd").Get())!.MergedInto));
        Assert.Equal(LoyaltyError.None, await fixture.Grains.GetGrain<IProgramLinksGrain>(_program).CompleteMerge("ns"));
        Assert.Equal("ns", (await Member("nd").Get())!.MergedInto);
        Assert.Equal("ns", (await Member("nx").Get())!.ReferredBy);
    }

    /// <summary>
    /// Stages a step of a desk that died: the desk took the program's lock and let it go at once,
    /// its <paramref name="step"/> (called directly, under that lock's epoch) is held in
    /// <paramref name="heldMember"/>'s turn once its entry of <paramref name="heldKind"/> is
    /// written, and <paramref name="newer"/> is asked meanwhile (through a newer desk), then
    /// <paramref name="after"/> is done; then the step goes on. Both answers.
    /// </summary>
    private async Task<(MemberResult Old, MemberResult Newer)> WhileAStepOfADeadDeskIsHeldAsync(
        LedgerEntryKind heldKind, string heldMember, Func<Task<MemberResult>> step, Func<Task<MemberResult>> newer, Func<Task>? after = null)
    {
        HeldLock old = await fixture.SiloServices.GetRequiredService<ILedgerStore>().LockAsync("links/" + _program, CancellationToken.None);
        await old.DisposeAsync();

        FaultInjector faults = fixture.SiloServices.GetRequiredService<FaultInjector>();
        var written = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var goOn = new ManualResetEventSlim();
        int held = 0;
        faults.Arm((at, entry) =>
        {
            if (at == FaultStep.Acknowledge && entry.ProgramId == _program && entry.MemberId == heldMember
                && entry.Kind == heldKind && Interlocked.Exchange(ref held, 1) == 0)
            {
                written.SetResult();
                goOn.Wait(StepHeldMax);
            }

            return false;
        });

        try
        {
            Task<MemberResult> oldStep = Task.Run(() =>
            {
                DeskEpoch.Enter(_program, old.Epoch);
                return step();
            });
            await written.Task.WaitAsync(StepHeldMax);
            MemberResult newerAnswer = await newer();
            if (after is not null)
            {
                await after();
            }

            faults.Disarm();
            goOn.Set();
            return (await oldStep.WaitAsync(StepHeldMax), newerAnswer);
        }
        finally
        {
            faults.Disarm();
            goOn.Set();
        }
    }

    private async Task AssertNoCycleAndLinksMirroredAsync(string[] members)
    {
        Dictionary<string, MemberView> views = (await Task.WhenAll(members.Select(async m => (await Member(m).Get())!)))
            .ToDictionary(v => v.MemberId);
        foreach (MemberView view in views.Values)
        {
            var seen = new HashSet<string> { view.MemberId };
            for (string? at = view.ReferredBy; at is not null; at = views[at].ReferredBy)
            {
                Assert.True(seen.Add(at), $"a referral cycle runs through {view.MemberId}: {string.Join(" → ", seen)} → {at}");
            }

            if (view.ReferredBy is { } referrer)
            {
                Assert.Contains(view.MemberId, views[referrer].Referrals);
            }

            // And the other way: a referrer holds no link to a member that does not name it.
            foreach (string referred in view.Referrals)
            {
                Assert.True(views.TryGetValue(referred, out MemberView? other) && other.ReferredBy == view.MemberId,
                    $"{view.MemberId} lists {referred} as referred, but {referred} names {(other is null ? "nobody known" : other.ReferredBy ?? "no referrer")}");
            }
        }
    }

    /// <summary>Every referred member earned its 200 with the qualifying purchase; its referrer must get 500, and nobody else anything.</summary>
    private async Task AssertRewardsBothSidesOrNeitherAsync(string[] members)
    {
        var deadline = DateTime.UtcNow + SettleWaitMax;
        Dictionary<string, MemberView> views;
        while (true)
        {
            views = (await Task.WhenAll(members.Select(async m => (await Member(m).Get())!))).ToDictionary(v => v.MemberId);
            bool settled = views.Values.All(v => v.Balance.Value == Expected(v, views));
            if (settled || DateTime.UtcNow > deadline)
            {
                break;
            }

            await Task.Delay(200);
        }

        foreach (MemberView v in views.Values)
        {
            Assert.Equal(Expected(v, views), v.Balance.Value);
        }

        // 20 points for the purchase (1 a dollar), 200 when referred, 500 per member referred.
        static long Expected(MemberView v, Dictionary<string, MemberView> all) =>
            20 + (v.ReferredBy is null ? 0 : 200) + 500L * all.Values.Count(o => o.ReferredBy == v.MemberId);
    }

    [Fact]
    public async Task ADuplicatesQualifyingPurchaseReturned_WhileItsSurvivorIsMergedOn_ReversesBothRewardsOnce()
    {
        await PutAsync();
        string[] Ids(string prefix) => [.. Enumerable.Range(0, PairsCount / 3).Select(i => $"{prefix}{i}")];
        // Per round: a referrer, its referred duplicate, a survivor and the member it is merged into, both referred by another.
        (string[] referrers, string[] duplicates, string[] survivors, string[] lasts, string[] others) = (Ids("rr"), Ids("rd"), Ids("rs"), Ids("rt"), Ids("ru"));
        await EnrolAllAsync([.. referrers, .. others]);
        await EnrolReferredAsync(duplicates, referrers);
        await EnrolReferredAsync(survivors, others);
        await EnrolReferredAsync(lasts, others);
        Assert.All(await Task.WhenAll(duplicates.Select(m => Member(m).Accrue(Buy(m, "p-" + m)).AsTask())), r => Assert.Equal(AccrualStatus.Accepted, r.Status));
        // Every referrer holds its reward before the merges (a settlement that failed is retried by a wake).
        DateTime rewarded = DateTime.UtcNow + SettleWaitMax;
        while (await TotalBalanceAsync(referrers) != 500L * referrers.Length && DateTime.UtcNow < rewarded)
        {
            await Task.WhenAll(duplicates.Select(m => Member(m).Wake()));
            await Task.Delay(200);
        }

        Assert.Equal(500L * referrers.Length, await TotalBalanceAsync(referrers));
        Assert.All(await Task.WhenAll(survivors.Select((m, i) => Member(m).MergeFrom(duplicates[i], "duplicate"))), r => Assert.Equal(LoyaltyError.None, r.Error));

        // At once: the survivor's return of the duplicate's qualifying purchase, and the survivor merged on.
        Task<ReturnResult[]> returning = Task.WhenAll(survivors.Select((m, i) => Member(m).Return(ReturnOf(m, "p-" + duplicates[i]))));
        Task<MemberResult[]> merging = Task.WhenAll(lasts.Select((m, i) => Member(m).MergeFrom(survivors[i], "duplicate")));
        ReturnResult[] returns = await returning;
        Assert.All(await merging, r => Assert.Equal(LoyaltyError.None, r.Error));
        for (int i = 0; i < survivors.Length; i++)
        {
            // Refused because the survivor was merged on first: the return is the last account's to take.
            ReturnResult returned = returns[i].Error == LoyaltyError.None ? returns[i]
                : await Member(lasts[i]).Return(ReturnOf(lasts[i], "p-" + duplicates[i]));
            Assert.True(returned.Error == LoyaltyError.None, returned.ErrorMessage);
            Assert.True(returned.Details!.ReferralReversed);
        }

        // Settled by the members' own retries and wakes; then every point of the referral is gone.
        string[] all = [.. referrers, .. duplicates, .. survivors, .. lasts, .. others];
        DateTime deadline = DateTime.UtcNow + SettleWaitMax;
        while (await TotalBalanceAsync(all) != 0 && DateTime.UtcNow < deadline)
        {
            await Task.WhenAll(lasts.Concat(survivors).Concat(duplicates).Select(m => Member(m).Wake()));
            await Task.Delay(200);
        }

        Assert.Equal(0L, await TotalBalanceAsync(all));
        Assert.Equal(referrers.Length, await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.ReferralReward} AND points < 0"));
    }

    [Fact]
    public async Task AReferrerMergedAway_WhileItsReferredMembersQualifyingPurchaseRewardsIt_IsRewardedOnce_AtTheSurvivor()
    {
        await PutAsync();
        string[] Ids(string prefix) => [.. Enumerable.Range(0, PairsCount / 3).Select(i => $"{prefix}{i}")];
        (string[] referrers, string[] referred, string[] survivors) = (Ids("ar"), Ids("an"), Ids("as"));
        await EnrolAllAsync([.. referrers, .. survivors]);
        await EnrolReferredAsync(referred, referrers);

        // At once: the referred member's qualifying purchase (which rewards its referrer) and the
        // referrer merged into a survivor. The reward lands at the referrer before the merge (and
        // moves with it) or at the survivor after it; never nowhere, never twice.
        Task<AccrualResult[]> buying = Task.WhenAll(referred.Select(m => Member(m).Accrue(Buy(m, "q-" + m)).AsTask()));
        Task<MemberResult[]> merging = Task.WhenAll(survivors.Select((m, i) => Member(m).MergeFrom(referrers[i], "duplicate")));
        Assert.All(await buying, r => Assert.Equal(AccrualStatus.Accepted, r.Status));
        Assert.All(await merging, r => Assert.True(r.Error == LoyaltyError.None, r.ErrorMessage));

        // A settlement that failed is retried by the referred member's wake.
        DateTime deadline = DateTime.UtcNow + SettleWaitMax;
        while (await TotalBalanceAsync(survivors) != 500L * survivors.Length && DateTime.UtcNow < deadline)
        {
            await Task.WhenAll(referred.Select(m => Member(m).Wake()));
            await Task.Delay(200);
        }

        Assert.Equal(500L * survivors.Length, await TotalBalanceAsync(survivors));
        Assert.Equal(0L, await TotalBalanceAsync(referrers));
        Assert.Equal((200L + 20L) * referred.Length, await TotalBalanceAsync(referred));
        Assert.Equal(survivors.Length, await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.ReferralReward} AND points > 0"));
    }

    private async Task EnrolReferredAsync(string[] members, string[] referrers)
    {
        EnrolmentResult[] results = await Task.WhenAll(members.Select((m, i) => Member(m).Enrol(new Enrolment(_program, m, referrers[i]))));
        Assert.All(results, r => Assert.Equal(LoyaltyError.None, r.Error));
    }

    private PurchaseReturn ReturnOf(string member, string original) =>
        new("r-" + original, _program, member, original, "s1", new Money(20_00, "USD"), fixture.Clock.GetUtcNow(), []);

    private async Task<long> TotalBalanceAsync(string[] members) =>
        (await Task.WhenAll(members.Select(async m => (await Member(m).Get())!.Balance.Value))).Sum();

    private Task PutAsync() => fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop);

    private async Task EnrolAllAsync(string[] members)
    {
        EnrolmentResult[] results = await Task.WhenAll(members.Select(m => Member(m).Enrol(new Enrolment(_program, m, null))));
        Assert.All(results, r => Assert.Equal(LoyaltyError.None, r.Error));
    }

    private IMemberGrain Member(string id) => fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, id));

    private Purchase Buy(string member, string txn, long amountMinor = 20_00) =>
        new(txn, _program, member, "s1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow().AddMinutes(-1), []);
}

public sealed class SqliteConcurrentLinkTests(SqliteClusterFixture fixture) : ConcurrentLinkTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresConcurrentLinkTests(PostgresClusterFixture fixture) : ConcurrentLinkTests(fixture), IClassFixture<PostgresClusterFixture>
{
    [Fact]
    public Task AMergeStepOfADeskThatStopped_IsRefused_EvenByANewActivationOfTheDuplicate() =>
        AMergeStepOfADeskThatStopped_IsRefused_EvenByANewActivationOfTheDuplicateAsync();
}
