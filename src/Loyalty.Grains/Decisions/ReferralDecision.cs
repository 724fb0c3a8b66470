namespace Loyalty.Grains;

/// <summary>
/// Referrals, one member's side at a time: whether a member may be given a referrer, the link on
/// each side, the referrer's reward (or its reversal) and the referred member's note that the
/// referrer was told. Which two members are linked, and in what order, is decided at the program's
/// desk (<see cref="ProgramLinksGrain"/>), so no interleaving makes a cycle; each side's entry is
/// decided here from that member's state alone.
/// </summary>
public static class ReferralDecision
{
    /// <summary>Why this member cannot be given <paramref name="referrer"/> as its referrer now, or null.</summary>
    public static Decision? Referrable(in Decider d, string referrer)
    {
        if (d.Closed() is { } closed)
        {
            return closed;
        }

        if (referrer == d.MemberId)
        {
            return Decision.Refuse(LoyaltyError.InvalidArgument, "a member cannot refer itself");
        }

        if (d.State.Referral.ReferredBy is { } already)
        {
            return Decision.Refuse(LoyaltyError.AlreadyExists, $"member '{d.MemberId}' was already referred by '{already}'");
        }

        if (d.State.Earnings.PurchaseCount > 0)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"member '{d.MemberId}' has already made a purchase; a referral must come before it");
        }

        // Checked before the referrer's side is written: the member's own entry (one unit) must fit
        // with the room a referred member keeps for its notes to its referrer (Headroom.SettlementRoom).
        return Headroom.Room(d.State) < 1
            ? Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"member '{d.MemberId}' has moved {d.State.Volume} points and minor units, too close to the engine's limit of {Headroom.VolumeMax} to keep room for a referrer's reward")
            : null;
    }

    /// <summary>The referred member's side of a link: the entry naming its referrer; nothing when already linked to it.</summary>
    public static Decision Referred(in Decider d, string referrer)
    {
        if (Referrable(d, referrer) is { } refusal)
        {
            return d.State.Enrolled && d.State.Referral.ReferredBy == referrer ? Decision.Nothing : refusal;
        }

        return Decision.Write(d.NewEntry(LedgerEntryKind.Referred, Points.Zero, null, 0) with { Reference = referrer });
    }

    /// <summary>
    /// The referrer's side of a link: the entry naming the referred member, within the most one
    /// member may refer and the program's cap per period; nothing when the link exists.
    /// </summary>
    public static Decision Referral(in Decider d, string referred)
    {
        ReferralSide side = d.State.Referral;
        Decision? closed = d.Closed();
        if (d.State.Enrolled && side.Referrals.Contains(referred) && (closed is null || !side.Unconfirmed.Contains(referred)))
        {
            // Made already, also by a member closed since once the link was whole: a link resent is
            // answered as made. One still unconfirmed when this member closed is not completed now.
            return Decision.Nothing;
        }

        if (closed is { } refused)
        {
            return refused;
        }

        if (side.Referrals.Count >= Limits.ReferralsPerMemberMax)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"referrer '{d.MemberId}' has referred {Limits.ReferralsPerMemberMax} members, the most one member may");
        }

        if (d.Settings.Referrals is { CapPerPeriod: > 0 } policy && side.MadeSince(d.Now, policy.PeriodDays) >= policy.CapPerPeriod)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"referrer '{d.MemberId}' has reached the program's cap of {policy.CapPerPeriod} referrals in {policy.PeriodDays} days");
        }

        return Decision.Write(d.NewEntry(LedgerEntryKind.ReferralLink, Points.Zero, null, 0) with
        {
            Reference = referred,
            Details = new ReferralLinkDetails { Unconfirmed = true },
        });
    }

    /// <summary>
    /// How long after an unconfirmed link was made the due schedule has the desk check it: longer
    /// than the change that made it takes when it does not fail (it is confirmed at once then).
    /// </summary>
    public static readonly TimeSpan LinkCheckDelay = TimeSpan.FromMinutes(1);

    /// <summary>
    /// The referrer's note on an unconfirmed link to <paramref name="referred"/>: it stands
    /// (<paramref name="stands"/>: the referred member names this one), or it is withdrawn. A
    /// withdrawal waits until the change that made the link has ended (<paramref name="changeEnded"/>)
    /// or the link is <see cref="LinkCheckDelay"/> old: after an UNAVAILABLE the referred member's
    /// commit may still land. Nothing when the link is not unconfirmed (settled already, or never
    /// made), when a withdrawal must wait, or when this member was erased (its links no longer
    /// count for anything) or merged away (which it cannot be with a link unconfirmed).
    /// </summary>
    public static Decision LinkSettled(in Decider d, string referred, bool stands, bool changeEnded)
    {
        MemberState state = d.State;
        if (!state.Enrolled || state.Erased || state.MergedInto is not null || !state.Referral.Unconfirmed.Contains(referred)
            || (!stands && !changeEnded && state.Referral.MadeAt(referred) + LinkCheckDelay > d.Now))
        {
            return Decision.Nothing;
        }

        return Decision.Write(d.NewEntry(stands ? LedgerEntryKind.ReferralConfirmed : LedgerEntryKind.ReferralWithdrawn, Points.Zero, null, 0) with
        {
            Reference = referred,
            Reason = stands ? null : $"'{referred}' never recorded this referral (the change that made it failed or was refused there)",
        });
    }

    /// <summary>
    /// The referrer's reward for <paramref name="referred"/>'s first qualifying purchase, or its
    /// reversal when that purchase came back in full (what was credited, from the soonest-expiring
    /// lots, floored at zero where the program floors balances). Nothing when it is already
    /// recorded, or when this member is not to be rewarded: erased, merged away, the referred
    /// member itself or merged into it.
    /// </summary>
    public static Decision Reward(in Decider d, string referred, string txn, long points, bool reverse)
    {
        MemberState state = d.State;
        if (!state.Enrolled)
        {
            return Decision.Refuse(LoyaltyError.NotFound, d.NotEnrolled);
        }

        IReadOnlyDictionary<string, long> rewards = state.Referral.Rewards;
        // A reward for this member itself or a duplicate merged in is nobody's to have (one rewards
        // no account of one's own); its reversal takes back what was credited before the merge
        // (a referrer merged into the member it referred brought that reward with its points).
        if (state.Erased || state.MergedInto is not null || (!reverse && (referred == d.MemberId || state.MergedFrom.Contains(referred)))
            || state.FindRecent(txn) is { Fingerprint: 0 } || (!reverse && rewards.ContainsKey(referred))
            || (reverse && rewards.GetValueOrDefault(referred, -1) == 0))
        {
            return Decision.Nothing;
        }

        if (!reverse)
        {
            return Decision.Write(d.NewEntry(LedgerEntryKind.ReferralReward, new Points(points), txn, 0) with
            {
                Reference = referred,
                Reason = "referred " + referred,
                Details = new ReferralRewardDetails { ExpiresAt = Decider.LotExpiry(d.Settings, d.Now) },
            });
        }

        // A reversal before the reward arrived records that none is due; it takes what was credited.
        long credited = Math.Max(0, rewards.GetValueOrDefault(referred));
        long fromActive = d.Settings.NegativeBalance == NegativeBalancePolicy.AllowNegative
            ? credited
            : Math.Min(credited, Math.Max(0, state.Balance.Value));
        return Decision.Write(d.NewEntry(LedgerEntryKind.ReferralReward, new Points(-fromActive), txn, 0) with
        {
            Reference = referred,
            Reason = "referral of " + referred + " reversed: the qualifying purchase was returned",
            Details = new ReferralRewardDetails { ReferralReversed = true, Lots = state.Lots.PlanTakeBack(fromActive, d.Now), Shortfall = credited - fromActive },
        });
    }

    /// <summary>The referred member's note that its referrer was told of the reward and/or its reversal; nothing when nothing is owed.</summary>
    public static Decision Settled(in Decider d, string referrer, bool reward, bool reversal) =>
        !d.State.Referral.Owed
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.ReferralSettled, Points.Zero, null, 0) with
            {
                Reference = referrer,
                Details = new ReferralSettledDetails { ReferrerReward = reward ? d.State.Referral.RewardOwed : 0, ReferralReversed = reversal },
            });

    /// <summary>
    /// The note that the referrer of a duplicate merged in (recorded as <paramref name="subject"/>)
    /// was told its reward is reversed, or refused that for good (<paramref name="refused"/>);
    /// nothing when it is not owed (written already).
    /// </summary>
    public static Decision MergedReversalSettled(in Decider d, string subject, LoyaltyError? refused)
    {
        MergedReferral? owed = d.State.Referral.Merged.FirstOrDefault(m => m.Subject == subject && m.Owed);
        return owed is null
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.ReferralSettled, Points.Zero, null, 0) with
            {
                Reference = owed.Referrer,
                Reason = refused is { } error ? $"the referrer '{owed.Referrer}' refused the reversal of its reward for '{subject}' ({error}); it is not offered again" : null,
                Details = new ReferralSettledDetails { ReferralReversed = refused is null, ReferrerRefused = refused is not null, Subject = subject },
            });
    }

    /// <summary>
    /// The referred member's note that its referrer refused the reward, or its reversal
    /// (<paramref name="reversalRefused"/>), for good (<paramref name="error"/>), having just taken
    /// the reward or not (<paramref name="rewarded"/>): nothing is owed any more, so it is not
    /// offered again; nothing when nothing is owed.
    /// </summary>
    public static Decision Refused(in Decider d, string referrer, LoyaltyError error, bool rewarded, bool reversalRefused) =>
        !d.State.Referral.Owed
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.ReferralSettled, Points.Zero, null, 0) with
            {
                Reference = referrer,
                Reason = $"the referrer '{referrer}' refused the {(reversalRefused ? "reward's reversal" : "reward")} ({error}); it is not offered again",
                Details = new ReferralSettledDetails { ReferrerReward = rewarded ? d.State.Referral.RewardOwed : 0, ReferrerRefused = true },
            });
}
