using System.Collections.ObjectModel;

namespace Loyalty.Grains;

/// <summary>
/// A member's place in the referral graph: who referred it and how far that referral got
/// (qualified by a purchase, reversed by its return, recorded by the referrer), and whom it
/// referred, with the reward it got for each. Changed only through <see cref="MemberState.Apply"/>.
/// </summary>
[GenerateSerializer]
public sealed class ReferralSide
{
    /// <summary>
    /// The side of a member that has no referral yet, shared by all of them: most members never
    /// refer or are referred, and a million of them should not each hold an empty one. It is
    /// read-only; <see cref="MemberState"/> makes a member its own side at its first referral change.
    /// </summary>
    public static ReferralSide None { get; } = new(shared: true);

    [NonSerialized]
    private readonly bool _shared;

    /// <summary>The qualifying purchase of a referral closed without a reward when a merge took it over.</summary>
    public const string ClosedByMerge = "#merged";

    /// <summary>Creates an empty side of the member's own.</summary>
    public ReferralSide()
    {
    }

    private ReferralSide(bool shared) => _shared = shared;

    [Id(0)] private List<string>? _referrals;
    [Id(1)] private List<DateTimeOffset>? _referredAt;
    [Id(2)] private Dictionary<string, long>? _rewards;

    /// <summary>Who referred this member, if anyone.</summary>
    [Id(3)] public string? ReferredBy { get; private set; }

    /// <summary>The purchase that qualified this referred member (and rewarded both sides); null before it.</summary>
    [Id(4)] public string? QualifiedBy { get; private set; }

    /// <summary>The reward the referrer is owed for this member's qualifying purchase.</summary>
    [Id(5)] public long RewardOwed { get; private set; }

    /// <summary>The qualifying purchase was returned in full: both referral rewards are reversed.</summary>
    [Id(6)] public bool Reversed { get; private set; }

    /// <summary>The referrer has recorded its reward for this member's qualifying purchase.</summary>
    [Id(7)] public bool RewardSettled { get; private set; }

    /// <summary>The referrer has recorded the reversal of that reward.</summary>
    [Id(8)] public bool ReversalSettled { get; private set; }

    /// <summary>
    /// The member id under which the referrer recorded this member's referral: its own, or that of
    /// a duplicate merged into it whose referral it took over. Null means its own.
    /// </summary>
    [Id(9)] public string? Subject { get; private set; }

    /// <summary>
    /// The referrals of duplicates merged into this member while it had a referrer of its own:
    /// each a purchase whose full return here reverses a referrer's reward that is not this
    /// member's own referrer's. At most one per merged duplicate.
    /// </summary>
    [Id(10)] private List<MergedReferral>? _merged;

    /// <summary>
    /// Members in <see cref="Referrals"/> whose own side of the link is not known to be written
    /// yet (see <see cref="ReferralLinkDetails.Unconfirmed"/>): the program's desk
    /// confirms or withdraws each.
    /// </summary>
    [Id(11)] private List<string>? _unconfirmed;

    /// <summary>The referrals whose referred member's side is not known to be written yet.</summary>
    public IReadOnlyList<string> Unconfirmed => (IReadOnlyList<string>?)_unconfirmed ?? [];

    /// <summary>When the referral of <paramref name="referred"/> was made; null when this member did not refer it.</summary>
    public DateTimeOffset? MadeAt(string referred) =>
        _referrals?.IndexOf(referred) is { } at and >= 0 ? _referredAt![at] : null;

    /// <summary>When the oldest unconfirmed referral was made; null when none is.</summary>
    public DateTimeOffset? UnconfirmedSince => _unconfirmed?.Min(MadeAt);

    /// <summary>The referrals of duplicates merged in that this member did not take as its own (see <see cref="MergedReferral"/>).</summary>
    public IReadOnlyList<MergedReferral> Merged => (IReadOnlyList<MergedReferral>?)_merged ?? [];

    /// <summary>A referrer of a merged duplicate still has to hear of its reward's reversal.</summary>
    public bool MergedOwed => IndexOfMerged(static m => m.Owed) >= 0;

    /// <summary>Some referrer still has to hear from this member: its own (<see cref="Owed"/>) or a merged duplicate's.</summary>
    public bool AnyOwed => Owed || MergedOwed;

    /// <summary>
    /// Whether a full return of <paramref name="purchaseId"/> reverses a referral: this member's own,
    /// or a merged duplicate's, qualified by that purchase and not reversed yet.
    /// </summary>
    public bool ReversedByReturnOf(string purchaseId)
    {
        if (QualifiedBy == purchaseId)
        {
            return !Reversed;
        }

        int merged = IndexOfMerged(m => m.QualifiedBy == purchaseId);
        return merged >= 0 && !Merged[merged].Reversed;
    }

    /// <summary>The merged referrals a merge of this member hands on: those whose referrer has not yet heard of their reversal; null for none.</summary>
    public IReadOnlyList<MergedReferral>? MergedToHandOn()
    {
        MergedReferral[] open = [.. Merged.Where(static m => !m.Reversed || !m.ReversalSettled)];
        return open.Length == 0 ? null : open;
    }

    /// <summary>Whom this member referred, oldest first.</summary>
    public IReadOnlyList<string> Referrals => (IReadOnlyList<string>?)_referrals ?? [];

    /// <summary>When each referral in <see cref="Referrals"/> was made (same order), for the referral cap.</summary>
    public IReadOnlyList<DateTimeOffset> ReferredAt => (IReadOnlyList<DateTimeOffset>?)_referredAt ?? [];

    /// <summary>As a referrer: the reward credited per referred member (0 once reversed).</summary>
    public IReadOnlyDictionary<string, long> Rewards => (IReadOnlyDictionary<string, long>?)_rewards ?? ReadOnlyDictionary<string, long>.Empty;

    /// <summary>Whether the referrer still has to record its reward, or its reversal.</summary>
    public bool Owed => ReferredBy is not null
        && ((RewardOwed > 0 && !RewardSettled) || (Reversed && !ReversalSettled));

    /// <summary>
    /// Referrals made in the <paramref name="days"/> days before <paramref name="now"/>. Every time
    /// is looked at: the times are in order as links are made, but a duplicate's referrals merged
    /// in keep their own times, which its silo's clock may have put after a later link's here.
    /// Links are rare next to purchases, so the walk costs nothing that matters.
    /// </summary>
    public int MadeSince(DateTimeOffset now, int days)
    {
        DateTimeOffset from = now.AddDays(-days);
        int count = 0;
        for (int i = 0; i < ReferredAt.Count; i++)
        {
            count += ReferredAt[i] > from ? 1 : 0;
        }

        return count;
    }

    /// <summary>Records who referred this member (an enrolment or a referral made later).</summary>
    public void ReferredByMember(string? referrer)
    {
        Writable();
        ReferredBy = referrer;
    }

    /// <summary>Records a member this one referred, once; <paramref name="unconfirmed"/> until its own side is known to be written.</summary>
    public void Link(string referred, DateTimeOffset at, bool unconfirmed)
    {
        Writable();
        if (!Referrals.Contains(referred))
        {
            (_referrals ??= []).Add(referred);
            (_referredAt ??= []).Add(at);
            if (unconfirmed)
            {
                (_unconfirmed ??= []).Add(referred);
            }
        }
    }

    /// <summary>The referred member's side of the link is written: the link stands.</summary>
    public void Confirm(string referred)
    {
        Writable();
        if (_unconfirmed is { } unconfirmed && unconfirmed.Remove(referred) && unconfirmed.Count == 0)
        {
            _unconfirmed = null;
        }
    }

    /// <summary>The referred member's side of an unconfirmed link was never written: the link goes, with its place under the caps.</summary>
    public void Withdraw(string referred)
    {
        Writable();
        Confirm(referred);
        if (_referrals is { } referrals && referrals.IndexOf(referred) is var at and >= 0)
        {
            referrals.RemoveAt(at);
            _referredAt!.RemoveAt(at);
        }
    }

    /// <summary>Records a member this one referred at <paramref name="at"/>, once, in time order among the others.</summary>
    private void LinkInOrder(string referred, DateTimeOffset at)
    {
        if (Referrals.Contains(referred))
        {
            return;
        }

        List<DateTimeOffset> times = _referredAt ??= [];
        int index = times.Count;
        while (index > 0 && times[index - 1] > at)
        {
            index--;
        }

        (_referrals ??= []).Insert(index, referred);
        times.Insert(index, at);
    }

    /// <summary>This member's purchase <paramref name="purchaseId"/> qualified its referral; the referrer is owed <paramref name="referrerReward"/>.</summary>
    public void Qualify(string? purchaseId, long referrerReward)
    {
        Writable();
        QualifiedBy = purchaseId;
        RewardOwed = referrerReward;
    }

    /// <summary>
    /// The qualifying purchase <paramref name="purchaseId"/> came back in full: both rewards of its
    /// referral are reversed, this member's own or a merged duplicate's.
    /// </summary>
    public void Reverse(string purchaseId)
    {
        Writable();
        if (QualifiedBy == purchaseId)
        {
            Reversed = true;
        }
        else if (IndexOfMerged(m => m.QualifiedBy == purchaseId) is var merged and >= 0)
        {
            _merged![merged] = _merged[merged] with { Reversed = true };
        }

        // Neither: the decision never writes that (it asks ReversedByReturnOf), so nothing changes
        // rather than the member's own referral.
    }

    /// <summary>
    /// The referrer recorded the reward, the reversal, or both: of this member's own referral, or
    /// (<paramref name="subject"/> set) the reversal of a merged duplicate's.
    /// </summary>
    public void Settle(bool reward, bool reversal, string? subject = null)
    {
        Writable();
        if (subject is not null)
        {
            // A merged duplicate's; one no longer held (never written so) changes nothing else.
            if (IndexOfMerged(m => m.Subject == subject) is var merged and >= 0)
            {
                _merged![merged] = _merged[merged] with { ReversalSettled = true };
            }

            return;
        }

        RewardSettled |= reward;
        ReversalSettled |= reversal;
    }

    private int IndexOfMerged(Func<MergedReferral, bool> match)
    {
        for (int i = 0; i < Merged.Count; i++)
        {
            if (match(Merged[i]))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>As a referrer: the reward for <paramref name="referred"/> (0 once reversed).</summary>
    public void Reward(string referred, long points)
    {
        Writable();
        (_rewards ??= new(StringComparer.Ordinal))[referred] = points;
    }

    /// <summary>
    /// A referral link of <paramref name="replaced"/> now names <paramref name="survivor"/>, which
    /// it was merged into. When this member referred the survivor too, the survivor is kept once,
    /// at its earlier link, so it is not listed, nor counted against a cap, twice.
    /// </summary>
    public void Repoint(string replaced, string survivor)
    {
        Writable();
        if (_referrals is { } referrals && referrals.Contains(replaced))
        {
            bool survivorListed = referrals.Contains(survivor);
            for (int i = 0; i < referrals.Count; i++)
            {
                referrals[i] = referrals[i] == replaced ? survivor : referrals[i];
            }

            DropRepeats();
            if (Unconfirmed.Contains(replaced))
            {
                // Still to be checked, now under the member that holds the account; a survivor
                // listed already keeps its own link's standing.
                Confirm(replaced);
                if (!survivorListed)
                {
                    (_unconfirmed ??= []).Add(survivor);
                }
            }
        }

        ReferredBy = ReferredBy == replaced ? survivor : ReferredBy;
    }

    /// <summary>
    /// Keeps each referred member once, at its first (earliest) link. Only states written before
    /// <see cref="Repoint"/> kept a survivor once can hold a member twice; a load drops the repeat,
    /// so such a state agrees with its ledger's replay again.
    /// </summary>
    public void DropRepeats()
    {
        if (_referrals is not { Count: > 1 } referrals)
        {
            return;
        }

        Writable();
        var seen = new HashSet<string>(referrals.Count, StringComparer.Ordinal);
        int kept = 0;
        for (int i = 0; i < referrals.Count; i++)
        {
            if (seen.Add(referrals[i]))
            {
                referrals[kept] = referrals[i];
                _referredAt![kept] = _referredAt[i];
                kept++;
            }
        }

        referrals.RemoveRange(kept, referrals.Count - kept);
        _referredAt!.RemoveRange(kept, _referredAt.Count - kept);
    }

    /// <summary>
    /// Takes over what a duplicate merged in at <paramref name="at"/> brings: the members it
    /// referred, its rewards for them, and (when <paramref name="inheritsReferrer"/>, because this
    /// member had no referrer) its own referral, under the id the referrer knows it by, so it is
    /// never rewarded twice and its reversal reaches the reward that was given. A referral taken
    /// over by a member that had bought before (<paramref name="afterPurchases"/>) is closed
    /// without a reward, as one set after a first purchase would be. Otherwise a referral it
    /// qualified is kept apart (<see cref="Merged"/>), so that its purchase's return reverses it.
    /// </summary>
    public void Adopt(MergeTransfer t, string self, bool inheritsReferrer, bool afterPurchases, DateTimeOffset at)
    {
        Writable();
        for (int i = 0; i < t.Referrals.Count; i++)
        {
            if (t.Referrals[i] == self)
            {
                // The duplicate referred this member: one person does not list itself among the
                // members it referred (its own link, naming the duplicate, stays; see the desk).
                continue;
            }

            // When the duplicate made each referral, so that the survivor's referral cap counts
            // them in their own period, not as made at the merge (a transfer from before the
            // times were handed on has none: the merge's time, as then).
            // (A link of this member's own still unconfirmed stays so: the desk's check finds the
            // referred member naming this one, or the duplicate, merged in, and keeps it.)
            LinkInOrder(t.Referrals[i], t.ReferredAt is { } times && i < times.Count ? times[i] : at);
        }

        if (inheritsReferrer)
        {
            ReferredBy = t.ReferredBy;
            // Closed without a reward when either account had bought before (see MergedInDetails.InheritedAfterPurchases).
            QualifiedBy = t.ReferralQualifiedBy ?? (t.PurchaseCount > 0 || afterPurchases ? ClosedByMerge : null);
            Reversed = t.ReferralReversed;
            RewardOwed = t.Referral?.RewardOwed ?? 0;
            RewardSettled = t.Referral?.RewardSettled ?? true;
            ReversalSettled = t.Referral?.ReversalSettled ?? false;
            Subject = t.Referral?.Subject ?? t.MemberId;
        }
        else if (t.ReferredBy is { } referrer && t.ReferralQualifiedBy is { } purchase && purchase != ClosedByMerge
            && t.Referral?.ReversalSettled != true)
        {
            // Its referral stays its referrer's: the purchase that qualified it is this member's to
            // return now, and its full return takes back the referrer's reward as well as the bonus
            // (this member's own reward, when it was the referrer).
            AddMerged(new MergedReferral(referrer, t.Referral?.Subject ?? t.MemberId, purchase, t.ReferralReversed));
        }

        foreach (MergedReferral earlier in t.MergedReferrals ?? [])
        {
            AddMerged(earlier);
        }

        foreach ((string referred, long points) in t.ReferralRewards ?? new Dictionary<string, long>())
        {
            (_rewards ??= new(StringComparer.Ordinal)).TryAdd(referred, points);
        }
    }

    /// <summary>Keeps a merged duplicate's referral once (a merge repeated hands it on again).</summary>
    private void AddMerged(MergedReferral referral)
    {
        if (IndexOfMerged(m => m.Subject == referral.Subject) < 0)
        {
            (_merged ??= []).Add(referral);
        }
    }

    /// <summary>This member's referral as a merge hands it on.</summary>
    public ReferralStatus StatusOf(string memberId) => new(Subject ?? memberId, RewardOwed, RewardSettled, ReversalSettled);

    /// <summary>Throws unless each referral has its time and merged referrals are bounded by the merges.</summary>
    public void AssertInvariants(long sequence, int mergedFrom)
    {
        if (Referrals.Count != ReferredAt.Count)
        {
            throw new InvalidOperationException($"After entry {sequence}: {Referrals.Count} referrals with {ReferredAt.Count} times.");
        }

        if (Merged.Count > mergedFrom)
        {
            throw new InvalidOperationException($"After entry {sequence}: {Merged.Count} merged referrals from {mergedFrom} merged accounts.");
        }

        foreach (string unconfirmed in Unconfirmed)
        {
            if (!Referrals.Contains(unconfirmed))
            {
                throw new InvalidOperationException($"After entry {sequence}: the unconfirmed referral of '{unconfirmed}' is not among the member's referrals.");
            }
        }
    }

    private void Writable()
    {
        if (_shared)
        {
            throw new InvalidOperationException("The shared empty referral side cannot change: the member makes its own first.");
        }
    }
}
