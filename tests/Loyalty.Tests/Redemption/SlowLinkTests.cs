using Loyalty.Storage;
using Microsoft.Extensions.DependencyInjection;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Redemption;

/// <summary>
/// A change that touches two members whose step outlasts a grain call's usual wait: the program's
/// desk must hold its lock until the step has ended, or an opposite request passes its check.
/// </summary>
public sealed class SlowLinkTests(ShortTimeoutClusterFixture fixture) : IClassFixture<ShortTimeoutClusterFixture>
{
    private static readonly TimeSpan StepDelay = TimeSpan.FromSeconds(5);
    private readonly string _program = "s" + Guid.NewGuid().ToString("N")[..10];

    [Fact]
    public async Task AnOppositeReferral_SentWhileALinkStepOutlastsTheCallsWait_CannotCloseACycle()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(new ProgramSettings("Shop", "USD", 2, 1, Referrals: new ReferralPolicy(ReferrerPoints: 500, ReferredPoints: 200)));
        await Member("a").Enrol(new Enrolment(_program, "a", null));
        await Member("b").Enrol(new Enrolment(_program, "b", null));

        // "a referred by b": b's side of the link (its referral entry) is held up past the silo's
        // 2 s wait for an answer, as a slow ledger would.
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        int held = 0;
        faults.Arm((step, entry) =>
        {
            if (step == FaultStep.Enqueue && entry.ProgramId == _program && entry.Kind == LedgerEntryKind.ReferralLink && Interlocked.Exchange(ref held, 1) == 0)
            {
                Thread.Sleep(StepDelay);
            }

            return false;
        });
        try
        {
            Task<MemberResult> there = Member("a").SetReferrer("b", null);
            await Task.Delay(TimeSpan.FromMilliseconds(500));
            Task<MemberResult> back = Member("b").SetReferrer("a", null);
            await Task.WhenAll(Answered(there), Answered(back));
            await Task.Delay(StepDelay);
        }
        finally
        {
            faults.Disarm();
        }

        MemberView a = (await Member("a").Get())!, b = (await Member("b").Get())!;
        Assert.Equal(1, held);
        Assert.False(a.ReferredBy == "b" && b.ReferredBy == "a", "a and b refer each other");
        Assert.Equal("b", a.ReferredBy);
        Assert.Null(b.ReferredBy);
    }

    /// <summary>Waits for a call whatever it answers: a caller's own wait may run out (2 s here) while the desk goes on.</summary>
    private static async Task Answered(Task<MemberResult> call)
    {
        try
        {
            await call;
        }
        catch (TimeoutException)
        {
        }
    }

    private IMemberGrain Member(string id) => fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, id));

    private IServiceProvider Silo() => fixture.SiloServices;
}
