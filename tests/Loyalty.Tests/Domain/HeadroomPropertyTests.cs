using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Domain;

/// <summary>
/// Property: whatever amounts near <see cref="long.MaxValue"/> a member's entries carry, an entry
/// the headroom check admits applies without an exception and keeps the member's invariants, and
/// the entries it refuses include ones that would really have overflowed.
/// </summary>
public sealed class HeadroomPropertyTests
{
    private const int SeedsCount = 300;
    private const int StepsPerSeed = 40;
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public void AdmittedEntries_NeverOverflow_AndRefusedOnesWouldHave()
    {
        int admitted = 0, refused = 0, refusedThatWouldThrow = 0;
        for (int seed = 0; seed < SeedsCount; seed++)
        {
            var random = new Random(seed);
            var state = new MemberState();
            for (int step = 0; step < StepsPerSeed; step++)
            {
                LedgerEntry entry = NextEntry(random, state, step);
                if (Headroom.Refuse(state, entry) is null)
                {
                    state.Apply(entry, recentMax: 8);
                    state.AssertInvariants(entry);
                    AssertInvariants(state, seed, step);
                    admitted++;
                    continue;
                }

                refused++;
                MemberState copy = Snapshots.RoundTrip(state);
                try
                {
                    copy.Apply(entry, recentMax: 8);
                }
                catch (OverflowException)
                {
                    refusedThatWouldThrow++;
                }
            }
        }

        Assert.True(admitted > SeedsCount * StepsPerSeed / 4, $"only {admitted} entries were admitted");
        Assert.True(refused > SeedsCount, $"only {refused} entries were refused");
        Assert.True(refusedThatWouldThrow > 0, "no refused entry would have overflowed: the amounts are not near the limits");
    }

    [Theory]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    [InlineData(Headroom.VolumeMax)]
    public void AnEntryBeyondTheLimitOnItsOwn_IsInvalid_WhateverTheMember(long points)
    {
        var state = new MemberState();
        LedgerEntry entry = Entry(1, LedgerEntryKind.Adjust, points, 0, null);

        (LoyaltyError Error, string Message)? refusal = Headroom.Refuse(state, entry);

        Assert.Equal(LoyaltyError.InvalidArgument, refusal?.Error);
        Assert.StartsWith("points is too large", refusal?.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("referrer")]
    [InlineData(null)]
    public void AReferredMember_KeepsRoomForTheNotesItOwesItsReferrer_OthersDoNot(string? referrer)
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, 0, null) with { Reference = referrer }, 8);
        state.Apply(Entry(2, LedgerEntryKind.Adjust, Headroom.VolumeMax - Headroom.SettlementRoom - 10, 0, null), 8);
        LedgerEntry credit = Entry(3, LedgerEntryKind.Adjust, 20, 0, null);
        LedgerEntry note = Entry(3, LedgerEntryKind.ReferralSettled, 0, 0, new ReferralSettledDetails { ReferrerReward = Limits.BonusPointsMax, ReferralReversed = true });

        (LoyaltyError Error, string Message)? creditRefused = Headroom.Refuse(state, credit);
        (LoyaltyError Error, string Message)? noteRefused = Headroom.Refuse(state, note);

        Assert.Null(noteRefused);
        if (referrer is null)
        {
            Assert.Null(creditRefused);
        }
        else
        {
            Assert.Equal(LoyaltyError.FailedPrecondition, creditRefused?.Error);
            Assert.Contains($"keeps {Headroom.SettlementRoom} for the notes it owes its referrer", creditRefused?.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void AnEntryThatDoesNotFollowTheSequence_IsABug_AndThrows()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, 0, null), 8);

        Assert.Throws<InvalidOperationException>(() => Headroom.Refuse(state, Entry(3, LedgerEntryKind.Adjust, 5, 0, null)));
        Assert.Throws<InvalidOperationException>(() => Headroom.Refuse(state, Entry(2, LedgerEntryKind.Adjust, 5, 0, null), Entry(4, LedgerEntryKind.Adjust, 5, 0, null)));
    }

    [Fact]
    public void AnEntryThatBreaksTheLots_FailsTheInvariantCheck_ForTheGrainToRebuild()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 100, 0, null), 8);

        // A redemption whose plan takes from no lot: the balance would drop below what the lots hold.
        LedgerEntry broken = Entry(2, LedgerEntryKind.Redeem, -10, 0, new RedeemDetails { Lots = [] });

        state.Apply(broken, 8);

        Assert.Contains("lots hold 100 for a balance of 90", Assert.Throws<InvalidOperationException>(() => state.AssertInvariants(broken)).Message, StringComparison.Ordinal);
    }

    private static LedgerEntry NextEntry(Random random, MemberState state, int step)
    {
        long sequence = state.Sequence + 1;
        if (!state.Enrolled)
        {
            return Entry(sequence, LedgerEntryKind.Enrol, Amount(random), 0, null);
        }

        long points = Amount(random);
        return random.Next(3) switch
        {
            0 => Entry(sequence, LedgerEntryKind.Earn, points, Amount(random), new EarnDetails
            {
                Components = [new BreakdownComponent(ComponentKind.Base, "base", points)],
                EarnDay = 20_000 + step,
                EarnMonth = 24_000 + step / 30,
                Lines = [new SkuAmount("sku", Amount(random), Multipliers.One, "base", random.Next(1, 10))],
            }),
            1 => Entry(sequence, LedgerEntryKind.Adjust, points, 0, null),
            _ => Debit(state, sequence, Math.Min(points, Math.Max(1, state.Balance.Value))),
        };
    }

    /// <summary>A debit of existing points, with the lots it takes, as a decision would plan it.</summary>
    private static LedgerEntry Debit(MemberState state, long sequence, long points) =>
        Entry(sequence, LedgerEntryKind.Adjust, -points, 0, new AdjustDetails { Lots = state.Lots.PlanDebit(points) });

    /// <summary>Amounts biased towards the limits: tiny, large, near half of 64 bits, and near all of it.</summary>
    private static long Amount(Random random) => random.Next(5) switch
    {
        0 => random.NextInt64(1, 1_000),
        1 => random.NextInt64(1, 1_000_000_000_000),
        2 => Headroom.VolumeMax - random.NextInt64(0, 1_000_000),
        3 => long.MaxValue - random.NextInt64(0, 1_000_000),
        _ => random.NextInt64(1, long.MaxValue / 8),
    };

    private static LedgerEntry Entry(long sequence, LedgerEntryKind kind, long points, long amountMinor, EntryDetails? details) =>
        new("p", "m", sequence, kind, new Points(points), "t" + sequence, 0, null, amountMinor, "USD", null, null,
            Start.AddMinutes(sequence), Start.AddMinutes(sequence), 1, null, details);

    private static void AssertInvariants(MemberState state, int seed, int step)
    {
        long inLots = state.Lots.Spendable.Sum(l => l.Points.Value);
        Assert.True(state.Volume <= Headroom.VolumeMax, $"seed {seed} step {step}: volume {state.Volume}");
        Assert.True(Math.Abs(state.Balance.Value) <= state.Volume && state.LifetimeEarned.Value <= state.Volume, $"seed {seed} step {step}: a counter exceeds the volume");
        Assert.Equal(Math.Max(0, state.Balance.Value), inLots);
    }
}
