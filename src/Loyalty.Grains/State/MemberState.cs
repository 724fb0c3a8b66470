using System.Collections.ObjectModel;

namespace Loyalty.Grains;

/// <summary>
/// A member as its grain holds it in memory, and as it is snapshotted. It changes only through
/// <see cref="Apply"/> (used both for live changes and for replaying the ledger) and
/// <see cref="LotBook.Mature"/> (a pure function of time), so replay always rebuilds exactly the state
/// that was acknowledged. Apply reads only the entry, never the program's configuration: every
/// decision the rules made is recorded in the entry's details.
/// </summary>
[GenerateSerializer]
public sealed class MemberState : IEarnHistory, IQualifying, Loyalty.Storage.ILedgerRebuiltState
{
    /// <summary>The newest transactions, to answer resends from memory; changed only through <see cref="Apply"/>.</summary>
    [Id(41)]
    private RecentTransactions _recent = new();

    /// <summary>The tier every member starts in until the program defines a ladder.</summary>
    public const string DefaultTier = "standard";

    /// <summary>Sequence of the newest ledger entry applied.</summary>
    [Id(0)] public long Sequence { get; private set; }

    /// <summary>Whether an enrolment entry has been applied.</summary>
    [Id(1)] public bool Enrolled { get; private set; }

    /// <summary>The member's points: balance and lots, pending points, reservations' holds.</summary>
    [Id(55)] public LotBook Lots { get; private set; } = new();

    /// <summary>What the member earned, bucketed for the tier window, the earn caps and reports.</summary>
    [Id(56)] public EarnHistory Earnings { get; private set; } = new();

    /// <summary>Who referred the member and whom it referred.</summary>
    public ReferralSide Referral => _referral ?? ReferralSide.None;

    // Made at the member's first referral change; until then the shared empty side stands in.
    [Id(57)] private ReferralSide? _referral;

    private ReferralSide ReferralToChange => _referral ??= new();

    // Nobody referred a member without a side of its own: it needs one only to name a referrer.
    private void SetReferredBy(string? referrer)
    {
        if (referrer is not null || _referral is not null)
        {
            ReferralToChange.ReferredByMember(referrer);
        }
    }

    /// <summary>What was returned of the member's most recently returned purchases.</summary>
    public ReturnBook Returns => _returns ?? ReturnBook.None;

    // Made at the member's first return; until then the shared empty book stands in.
    [Id(58)] private ReturnBook? _returns;

    // The member's own return book, made at its first return applied.
    private ReturnBook ReturnsToChange() => _returns ??= new();

    /// <summary>Spendable (active) points. Negative only under the allow-negative policy.</summary>
    public Points Balance => Lots.Balance;

    /// <summary>
    /// What the member may spend at <paramref name="now"/>: the balance less the points open
    /// reservations hold and less points past their expiry (see <see cref="LotBook.SpendableAt"/>).
    /// </summary>
    public Points AvailableAt(DateTimeOffset now) => Balance.Value <= 0 ? Balance - Lots.HeldAt(now) : new Points(Lots.SpendableAt(now));

    /// <summary>All points ever earned (purchases, sign-up, positive adjustments), before returns.</summary>
    [Id(3)] public Points LifetimeEarned { get; private set; }

    /// <summary>The member's tier as of its newest entry.</summary>
    [Id(4)] public string Tier { get; private set; } = DefaultTier;

    /// <summary>When the member enrolled.</summary>
    [Id(7)] public DateTimeOffset EnrolledAt { get; private set; }

    /// <summary>When the tier is next reviewed for a downgrade; null in the entry tier.</summary>
    [Id(10)] public DateTimeOffset? TierReviewAt { get; private set; }

    /// <summary>All points reversed by returns.</summary>
    [Id(18)] public Points LifetimeReversed { get; private set; }

    /// <summary>The newest member activity (enrolment, earn, redeem, reservation), for the inactivity rule.</summary>
    [Id(21)] public DateTimeOffset LastActivityAt { get; private set; }

    /// <summary>All points spent on rewards.</summary>
    [Id(23)] public Points LifetimeRedeemed { get; private set; }

    /// <summary>All points that expired (breakage).</summary>
    [Id(24)] public Points LifetimeExpired { get; private set; }

    /// <summary>
    /// The sum of the magnitudes of every entry applied (see <see cref="Headroom"/>): every counter
    /// here is bounded by it in absolute value, and decisions keep it within
    /// <see cref="Headroom.VolumeMax"/>, so applying an admitted entry cannot overflow.
    /// </summary>
    [Id(39)] public long Volume { get; private set; }

    /// <summary>
    /// The snapshot format this state was written in; a snapshot of another format is ignored and
    /// the member is rebuilt from its ledger alone. Zero in states written before formats were kept.
    /// </summary>
    [Id(40)] public int Format { get; set; }

    // What few members have (erasure, merges, flags, giving, birthdays, paid membership, the
    // wallet, trade-ins, a shortfall, an inactivity warning) lives in an object made at the
    // first such change, so that the many members without any hold one empty reference instead
    // of about 120 bytes of empty fields (a state of 184 bytes instead of 304). Setting a default value makes no object.
    [Id(59)] private OccasionalState? _occasional;

    private OccasionalState Occasional => _occasional ??= new();

    // Stores one of those values: a default value, for a member that has none of them yet, makes no object.
    private void SetOccasional<T>(T value, Action<OccasionalState, T> store)
    {
        if (_occasional is not null || !EqualityComparer<T>.Default.Equals(value, default!))
        {
            store(Occasional, value);
        }
    }

    /// <summary>Whether the member holds an object for what few members have (for tests of the state's size).</summary>
    internal bool HasOccasional => _occasional is not null;

    private List<string>? FlagsKept { get => _occasional?.Flags; set => SetOccasional(value, static (o, v) => o.Flags = v); }

    /// <summary>The member's flags, e.g. "storecard".</summary>
    public IReadOnlyList<string> Flags => (IReadOnlyList<string>?)FlagsKept ?? [];

    /// <summary>Points returns could not take back because the balance was floored at zero.</summary>
    public Points Shortfall { get => _occasional?.Shortfall ?? default; private set => SetOccasional(value, static (o, v) => o.Shortfall = v); }

    /// <summary>The inactivity deadline the member was last warned about.</summary>
    public DateTimeOffset? InactivityWarnedFor { get => _occasional?.InactivityWarnedFor; private set => SetOccasional(value, static (o, v) => o.InactivityWarnedFor = v); }

    /// <summary>
    /// When the programme last granted points (a birthday, an adjustment, feedback, a referral
    /// reward) to a member that held none: the inactivity clock runs from it as from activity, so
    /// a grant to a member already past its deadline is not expired at that old deadline, dated
    /// before the grant. A grant to a member that holds points does not move its deadline.
    /// </summary>
    public DateTimeOffset? GrantedIntoEmptyAt { get => _occasional?.GrantedIntoEmptyAt; private set => SetOccasional(value, static (o, v) => o.GrantedIntoEmptyAt = v); }

    /// <summary>The member's personal data was erased; it takes no more changes.</summary>
    public bool Erased { get => _occasional?.Erased ?? false; private set => SetOccasional(value, static (o, v) => o.Erased = v); }

    /// <summary>The member this duplicate account was merged into; it takes no more changes.</summary>
    public string? MergedInto { get => _occasional?.MergedInto; private set => SetOccasional(value, static (o, v) => o.MergedInto = v); }

    /// <summary>What this account handed over when it was merged away (to answer a repeated merge).</summary>
    public MergeTransfer? Detached { get => _occasional?.Detached; private set => SetOccasional(value, static (o, v) => o.Detached = v); }

    private List<string>? MergedFromKept { get => _occasional?.MergedFrom; set => SetOccasional(value, static (o, v) => o.MergedFrom = v); }

    /// <summary>Duplicate accounts merged into this one.</summary>
    public IReadOnlyList<string> MergedFrom => (IReadOnlyList<string>?)MergedFromKept ?? [];

    private List<string>? QualifyingFromKept { get => _occasional?.QualifyingFrom; set => SetOccasional(value, static (o, v) => o.QualifyingFrom = v); }

    /// <summary>
    /// The duplicates (of <see cref="MergedFrom"/>) whose qualifying history this member holds: a
    /// return of one of their purchases takes its amounts off this member's qualification. Merges
    /// recorded before that history was handed on are not among them.
    /// </summary>
    public IReadOnlyList<string> QualifyingFrom => (IReadOnlyList<string>?)QualifyingFromKept ?? [];

    /// <summary>
    /// The duplicate whose merge into this member was started (<see cref="LedgerEntryKind.MergeStarted"/>)
    /// and is not over yet; null when none is. One at a time: the desk completes an open merge
    /// before it starts another, and a member with one open is neither erased nor merged away.
    /// </summary>
    public string? MergingFrom { get => _occasional?.MergingFrom; private set => SetOccasional(value, static (o, v) => o.MergingFrom = v); }

    /// <summary>When the open merge (<see cref="MergingFrom"/>) was started.</summary>
    public DateTimeOffset MergingSince { get => _occasional?.MergingSince ?? default; private set => SetOccasional(value, static (o, v) => o.MergingSince = v); }

    /// <summary>The reason the open merge (<see cref="MergingFrom"/>) was asked for with, for its completion.</summary>
    public string? MergingReason { get => _occasional?.MergingReason; private set => SetOccasional(value, static (o, v) => o.MergingReason = v); }

    /// <summary>
    /// Whether the open merge's duplicate has not been taken in yet: the member is then neither
    /// erased nor merged away, so that the duplicate's points, once let go, always have an open
    /// account to arrive at. Once it is in, only its links may be left to move, and those follow
    /// the account wherever it went (see <c>MemberGrain.MergeDuplicate</c>).
    /// </summary>
    public bool AwaitsOpenMerge => MergingFrom is { } duplicate && !MergedFrom.Contains(duplicate);

    /// <summary>
    /// Whether the member's referrer is one of its own accounts: itself, or one merged (or being
    /// merged) into it. One person referred by their own other account is rewarded on neither side.
    /// </summary>
    public bool ReferredByOwnAccount(string memberId) =>
        Referral.ReferredBy is { } referrer && (referrer == memberId || referrer == MergingFrom || MergedFrom.Contains(referrer));

    /// <summary>
    /// When the member's due schedule is to have the desk complete its open merge (see
    /// <see cref="LifecycleDecision.MergeCheckDelay"/>); null when none is open.
    /// </summary>
    public DateTimeOffset? MergeCheckAt => MergingFrom is null ? null : MergingSince + LifecycleDecision.MergeCheckDelay;

    /// <summary>
    /// When the program's desk is to check this member's oldest unconfirmed referral link (see
    /// <see cref="ReferralDecision.LinkCheckDelay"/>); null when none is, or when the member was
    /// erased or merged away (its links are settled no more).
    /// </summary>
    public DateTimeOffset? LinkCheckAt =>
        Referral.UnconfirmedSince is { } since && !Erased && MergedInto is null ? since + ReferralDecision.LinkCheckDelay : null;

    /// <summary>Whether the member has profile fields (kept outside the ledger).</summary>
    public bool HasProfile { get => _occasional?.HasProfile ?? false; private set => SetOccasional(value, static (o, v) => o.HasProfile = v); }

    private BookedBonusDays? BonusDaysBooked { get => _occasional?.BonusDays; set => SetOccasional(value, static (o, v) => o.BonusDays = v); }

    /// <summary>The personal bonus days the member booked; made on the first booking.</summary>
    public BookedBonusDays BonusDays => BonusDaysBooked ?? NoBonusDays;

    private static readonly BookedBonusDays NoBonusDays = new();

    /// <summary>The cause the member chose for its purchases to give to; null when none.</summary>
    public string? Cause { get => _occasional?.Cause; private set => SetOccasional(value, static (o, v) => o.Cause = v); }

    /// <summary>Money the member's purchases gave to causes, net of returns, in minor units.</summary>
    public long GivenMinor { get => _occasional?.GivenMinor ?? 0; private set => SetOccasional(value, static (o, v) => o.GivenMinor = v); }

    /// <summary>The month (1..12) of the birthday in the member's profile; 0 when it has none.</summary>
    public int BirthMonth { get => _occasional?.BirthMonth ?? 0; private set => SetOccasional(value, static (o, v) => o.BirthMonth = v); }

    /// <summary>The newest year the member's birthday was rewarded; 0 before the first.</summary>
    public int BirthdayYear { get => _occasional?.BirthdayYear ?? 0; private set => SetOccasional(value, static (o, v) => o.BirthdayYear = v); }

    /// <summary>The newest birthday's grant, with its gift; null before the first.</summary>
    public BirthdayGrant? BirthdayGrant { get => _occasional?.BirthdayGrant; private set => SetOccasional(value, static (o, v) => o.BirthdayGrant = v); }

    /// <summary>The newest birthday's gift has been redeemed.</summary>
    public bool BirthdayGiftUsed { get => _occasional?.BirthdayGiftUsed ?? false; private set => SetOccasional(value, static (o, v) => o.BirthdayGiftUsed = v); }

    private MembershipState? MembershipKept { get => _occasional?.Membership; set => SetOccasional(value, static (o, v) => o.Membership = v); }

    /// <summary>The member's paid membership; made on its first membership entry.</summary>
    public MembershipState Membership => MembershipKept ?? NoMembership;

    private static readonly MembershipState NoMembership = new();

    /// <summary>The store-credit wallet, in minor units: trade-in credit less what purchases spent, plus refunds.</summary>
    public long WalletMinor { get => _occasional?.WalletMinor ?? 0; private set => SetOccasional(value, static (o, v) => o.WalletMinor = v); }

    private List<OpenTradeIn>? TradeInsOpen { get => _occasional?.TradeIns; set => SetOccasional(value, static (o, v) => o.TradeIns = v); }

    /// <summary>Trade-ins waiting for inspection, oldest first; decisions keep them at most <see cref="Limits.OpenTradeInsMax"/>.</summary>
    public IReadOnlyList<OpenTradeIn> TradeIns => (IReadOnlyList<OpenTradeIn>?)TradeInsOpen ?? [];

    /// <summary>The birthday gift the member may redeem at <paramref name="now"/>; null when none is open.</summary>
    public BirthdayGrant? OpenBirthdayGift(DateTimeOffset now) =>
        BirthdayGrant is { GiftRewardId: not null } grant && !BirthdayGiftUsed && now < grant.GiftUntil ? grant : null;


    /// <summary>
    /// The format of snapshots this version writes (3: <see cref="Volume"/> is kept, collections
    /// made on first use; 4: the purchase activity is kept; 5: the state is split by concern into
    /// <see cref="Lots"/>, <see cref="Earnings"/>, <see cref="Referral"/> and <see cref="Returns"/>;
    /// 6: the earn-cap periods are sorted arrays; 7: lot ids are kept inside the lots, see <see cref="LotId"/>; 8: what few members have is kept
    /// apart, made on first use, and so are the referral side and the return book; 9: campaign
    /// points are bounded, each with the entry that last earned from it, and the return book
    /// never holds a refused return's read; 10: when points were last granted to a member holding
    /// none; 11: when each reservation was made; 12: when a membership's paid time began; 13: a
    /// lot that points join after its warning is unwarned, so snapshots from before are rebuilt;
    /// 14: points granted while every lot held is past its expiry count as granted into empty;
    /// 15: one day's pending points share a lot, and the return book counts what returns took from pending;
    /// 16: a survivor with a referrer of its own keeps its duplicates' referrals, to reverse them;
    /// 17: also a survivor that was the duplicate's referrer, and a note naming no referral changes none;
    /// 18: the merge into the member started and not yet settled, with its reason; 19: a
    /// reservation's value kept with its hold, and an erased member's open birthday gift dropped;
    /// 20: a merge hands on the duplicate's shortfall, which an older engine's snapshot of a
    /// survivor would leave out).
    /// </summary>
    public const int CurrentFormat = 20;

    /// <summary>
    /// What a member grain hands the snapshot store to read into: a read that finds no row leaves
    /// it there, and the grain starts from a new state. Never changed, never written (its format is not current).
    /// </summary>
    public static MemberState Placeholder { get; } = new();

    /// <summary>
    /// Applies one ledger entry: a table of what each kind does, every kind listed. Throws when
    /// entries arrive out of order or the kind is unknown (a ledger written by a newer version),
    /// before changing anything. A live entry was admitted by <see cref="Headroom.Refuse"/>, so
    /// nothing below can overflow, and carries its kind's details. An entry read back without the
    /// details its kind needs throws from the kind's own step, after the sequence has moved: only
    /// in a load, whose half-made state is dropped (the member answers UNAVAILABLE until it
    /// loads). A live return passes the progress of its purchase it was decided on when the
    /// member kept none (<paramref name="returnSeed"/>, see <see cref="ReturnBook.Record"/>).
    /// </summary>
    public void Apply(LedgerEntry entry, int recentMax, ReturnProgress? returnSeed = null)
    {
        if (entry.Sequence <= Sequence)
        {
            throw new InvalidOperationException($"Ledger entry {entry.Sequence} applied after {Sequence}.");
        }

        if (!Enum.IsDefined(entry.Kind))
        {
            throw new InvalidOperationException($"Ledger entry {entry.Sequence} is of unknown kind {(int)entry.Kind}.");
        }

        Volume = checked(Volume + Headroom.MagnitudeOf(entry));
        Sequence = entry.Sequence;
        Lots.Mature(entry.RecordedAt);
        ApplyKind(entry, returnSeed);
        if (entry.TransactionId is not null)
        {
            _recent.Add(entry.TransactionId, entry.Fingerprint, entry.Points, entry.Sequence, recentMax);
        }
    }

    /// <summary>
    /// Gives the structures every purchase writes to (the remembered transactions' ring, the lot
    /// and qualifying-day lists, the cap day and month arrays) room for the next purchases, so that they are
    /// allocated when the member is enrolled or loaded rather than by its first purchase. A member
    /// held in memory is old to the garbage collector; what a purchase allocates and hangs on it
    /// survives the next collection and is copied, and the pause grows with the members who bought
    /// since. With the room made here, a purchase writes numbers into arrays the member already has,
    /// except while its first transactions fill the remembered ring, which doubles from two slots
    /// up to its limit (at most three times; see <see cref="RecentTransactions"/>) so that members
    /// who buy once do not each hold a full ring. Changes no value: only capacity.
    /// </summary>
    public void Prepare(int recentMax)
    {
        _recent.Prepare(recentMax);
        Lots.Prepare();
        Earnings.Prepare();
        Referral.DropRepeats();
    }

    /// <summary>
    /// Drops this member from its own referrals, where a state saved before merges left it out
    /// (a duplicate that referred its survivor handed it on) has it, so that it agrees with its
    /// ledger's replay again.
    /// </summary>
    public void Unlist(string memberId)
    {
        if (Referral.Referrals.Contains(memberId))
        {
            ReferralToChange.Withdraw(memberId);
        }
    }

    /// <summary>
    /// What every apply must leave true: the lots hold exactly the positive balance, soonest
    /// expiry first; pending lots are in order of availability; the histories are within their
    /// bounds. (The limits on referrals and merges are decisions, not invariants: a merge cut
    /// short after the duplicate let go is completed even at the limit, so that no points are
    /// stranded.) A breach is a bug; it throws, and the member grain (which marks its state invalid
    /// while an entry applies, and checks after every live apply) rebuilds the member from its
    /// ledger instead of serving a broken state. Replay does not check: a ledger written by an
    /// older version (more merges than the limit allows now, say) must still load.
    /// </summary>
    public void AssertInvariants(LedgerEntry entry)
    {
        Lots.AssertInvariants(entry.Sequence);
        Earnings.AssertInvariants(entry.Sequence);
        Referral.AssertInvariants(entry.Sequence, MergedFrom.Count);
        Returns.AssertInvariants(entry.Sequence);
    }

    /// <summary>
    /// The remembered transaction whose id hashes like this one, or null; see
    /// <see cref="RecentTransactions"/> for what a match means.
    /// </summary>
    public Remembered? FindRecent(string transactionId) => _recent.Find(transactionId);

    /// <summary>How many transactions are remembered.</summary>
    public int RecentCount => _recent.Count;

    /// <summary>The slots of the ring of recent transactions (for tests of its growth).</summary>
    internal int RecentSlots => _recent.Slots;

    /// <inheritdoc />
    long IEarnHistory.CampaignEarned(string campaignId) => Earnings.CampaignEarned(campaignId);

    /// <inheritdoc />
    long IEarnHistory.EarnedOnDay(int day) => Earnings.EarnedOnDay(day);

    /// <inheritdoc />
    long IEarnHistory.EarnedInMonth(int month) => Earnings.EarnedInMonth(month);

    /// <inheritdoc />
    bool IEarnHistory.IsBonusDay(int day) => BonusDaysBooked?.Contains(day) ?? false;

    /// <inheritdoc />
    long IQualifying.QualifyingAt(TierLadder ladder, DateTimeOffset at)
    {
        (long points, long spend) = Earnings.QualifyingAt(at, ladder.WindowDays);
        return ladder.Basis == TierBasis.Points ? points : spend;
    }

    /// <summary>The member as queries see it; <paramref name="tier"/> is the tier after any review due now.</summary>
    public MemberView ToView(string programId, string memberId, string tier, DateTimeOffset? reviewAt, long qualifying, IReadOnlyList<string> perks) =>
        new(programId, memberId, Balance, tier, Referral.ReferredBy, [.. Referral.Referrals], LifetimeEarned, EnrolledAt, Sequence,
            Lots.PendingTotal, [.. Lots.Pending.Select(l => new PendingPoints(l.TransactionId, l.Points, l.AvailableAt))],
            [.. Flags], reviewAt, qualifying, perks, Shortfall, LifetimeReversed);

    /// <summary>The hand-over of a merge, from this member's state (mature its pending lots first).</summary>
    public MergeTransfer TransferOf(string memberId, string tier, DateTimeOffset? tierReviewAt) => new(
        memberId, Balance.Value,
        [.. Lots.Spendable.Select(l => new LotUse(l.Id, l.Points.Value, l.ExpiresAt))],
        [.. Lots.Pending.Select(p => new PendingLotUse(p.TransactionId, p.Points.Value, p.AvailableAt, p.ExpiresAt))],
        tier, tierReviewAt, Referral.ReferredBy, [.. Referral.Referrals],
        LifetimeEarned.Value, LifetimeRedeemed.Value, LifetimeExpired.Value, LifetimeReversed.Value,
        Returns.Transfer(),
        Earnings.PurchaseCount, Referral.QualifiedBy, Referral.Reversed, LastActivityAt,
        Referral.StatusOf(memberId),
        new Dictionary<string, long>(Referral.Rewards, StringComparer.Ordinal),
        [.. MergedFrom], GivenMinor, WalletMinor, GrantedIntoEmptyAt,
        TrialsUsed: Membership.TrialsUsed.Count == 0 ? null : [.. Membership.TrialsUsed],
        ReferredAt: Referral.ReferredAt.Count == 0 ? null : [.. Referral.ReferredAt],
        BirthdayGift: BirthdayGrant is { GiftRewardId: not null } gift && !BirthdayGiftUsed ? gift : null,
        BirthdayYear: BirthdayYear,
        BonusDays: BonusDays.Days.Count == 0 ? null : [.. BonusDays.Days],
        MergedReferrals: Referral.MergedToHandOn(),
        Qualification: Earnings.QualificationToHandOn(),
        QualifyingFrom: [.. QualifyingFrom],
        WarnedExpiries: Lots.WarnedExpiries(),
        Shortfall: Shortfall.Value);

    /// <summary>The UTC calendar day of an instant, as a day number.</summary>
    public static int DayOf(DateTimeOffset at) => DateOnly.FromDateTime(at.UtcDateTime).DayNumber;

    private void ApplyKind(LedgerEntry entry, ReturnProgress? returnSeed)
    {
        switch (entry.Kind)
        {
            case LedgerEntryKind.Enrol: ApplyEnrol(entry); break;
            case LedgerEntryKind.Earn: ApplyEarn(entry); break;
            case LedgerEntryKind.Return: ApplyReturn(entry, returnSeed); break;
            case LedgerEntryKind.Adjust: ApplyAdjust(entry); break;
            case LedgerEntryKind.Feedback: Earn(entry); break;
            case LedgerEntryKind.Redeem: ApplyRedeem(entry); break;
            case LedgerEntryKind.Reserve: ApplyReserve(entry); break;
            case LedgerEntryKind.ReservationEnd: Lots.EndHold(entry.Reference); break;
            case LedgerEntryKind.Expire: ApplyExpire(entry); break;
            case LedgerEntryKind.ExpiryWarning: ApplyWarning(entry.DetailsAs<ExpiryWarningDetails>()); break;
            case LedgerEntryKind.Flags: FlagsKept = entry.DetailsAs<FlagsDetails>()?.Flags is { Count: > 0 } flags ? [.. flags] : null; break;
            case LedgerEntryKind.ReferralLink: ApplyReferralLink(entry); break;
            case LedgerEntryKind.ReferralConfirmed: ReferralToChange.Confirm(ReferredIn(entry)); break;
            case LedgerEntryKind.ReferralWithdrawn: ReferralToChange.Withdraw(ReferredIn(entry)); break;
            case LedgerEntryKind.Referred: SetReferredBy(entry.Reference); break;
            case LedgerEntryKind.ReferralReward: ApplyReferralReward(entry); break;
            case LedgerEntryKind.ReferralSettled: ApplyReferralSettled(entry.DetailsAs<ReferralSettledDetails>()); break;
            case LedgerEntryKind.Repointed: ApplyRepointed(entry); break;
            case LedgerEntryKind.Profile: ApplyProfile(entry); break;
            case LedgerEntryKind.Erase: ApplyErase(); break;
            case LedgerEntryKind.MergedAway: ApplyMergedAway(entry); break;
            case LedgerEntryKind.MergedIn: ApplyMergedIn(entry); break;
            case LedgerEntryKind.MergeStarted: ApplyMergeStarted(entry); break;
            case LedgerEntryKind.MergeSettled: ApplyMergeSettled(entry); break;
            case LedgerEntryKind.Birthday: ApplyBirthday(entry); break;
            case LedgerEntryKind.BonusDayBooked: ApplyBonusDay(entry); break;
            case LedgerEntryKind.CauseChosen: Cause = entry.Reference; break;
            case LedgerEntryKind.MembershipStarted or LedgerEntryKind.MembershipRenewed
                or LedgerEntryKind.MembershipCancelled or LedgerEntryKind.MembershipLapsed: (MembershipKept ??= new MembershipState()).Apply(entry); break;
            case LedgerEntryKind.TradeInSubmitted: (TradeInsOpen ??= []).Add(new OpenTradeIn(entry.TransactionId!, entry.DetailsAs<TradeInSubmittedDetails>()?.TradeIn?.Category ?? "", entry.RecordedAt, entry.StoreId)); break;
            case LedgerEntryKind.TradeInAccepted or LedgerEntryKind.TradeInRejected: ApplyTradeInDecided(entry); break;
            case LedgerEntryKind.TierReviewed: ApplyTierReviewed(entry.DetailsAs<TierReviewedDetails>() ?? throw new InvalidOperationException($"Tier review {entry.Sequence} has no details.")); break;
            default: throw new InvalidOperationException($"Ledger entry {entry.Sequence} is of unknown kind {(int)entry.Kind}.");
        }
    }

    /// <summary>Points that arrive spendable at once: a lot of their expiry, and lifetime earned.</summary>
    private void Earn(LedgerEntry entry)
    {
        // Lots past their expiry whose write-off is not written yet (the member's wake comes within
        // the schedule's spread) hold nothing the member has: the grant is into empty all the same.
        if (entry.Points.Value > 0 && Lots.HoldsNothingLiveAt(entry.RecordedAt))
        {
            GrantedIntoEmptyAt = entry.RecordedAt;
        }

        Lots.Credit(entry.Points, entry.TransactionId ?? LotIdOf(entry), (entry.Details as ILotCredit)?.ExpiresAt);
        LifetimeEarned += entry.Points;
    }

    private void ApplyReferralSettled(ReferralSettledDetails? details)
    {
        // A refusal settles both: nothing is owed to the referrer, and nothing is to be reversed.
        bool refused = details?.ReferrerRefused == true;
        ReferralToChange.Settle(details?.ReferrerReward > 0 || refused, details?.ReferralReversed == true || refused, details?.Subject);
    }

    private void ApplyEnrol(LedgerEntry entry)
    {
        Enrolled = true;
        EnrolledAt = entry.OccurredAt;
        SetReferredBy(entry.Reference);
        EnrolDetails? details = entry.DetailsAs<EnrolDetails>();
        Lots.Credit(entry.Points, "#signup", details?.ExpiresAt);
        LifetimeEarned += entry.Points;
        LastActivityAt = entry.RecordedAt;
        Tier = details?.TierAfter ?? DefaultTier;
        TierReviewAt = null;
    }

    private void ApplyEarn(LedgerEntry entry)
    {
        EarnDetails? details = entry.DetailsAs<EarnDetails>();
        if (entry.AvailableAt is { } availableAt && availableAt > entry.RecordedAt && entry.Points.Value > 0)
        {
            Lots.AddPending(new PendingLot(entry.TransactionId!, availableAt, entry.Points, details?.ExpiresAt));
        }
        else if (entry.Points.Value > 0)
        {
            Lots.Credit(entry.Points, entry.TransactionId!, details?.ExpiresAt);
        }

        LifetimeEarned += entry.Points;
        LastActivityAt = entry.RecordedAt;
        GivenMinor += details?.GivenMinor ?? 0;
        WalletMinor += details?.WalletMinor ?? 0;
        int day = DayOf(entry.RecordedAt);
        Earnings.CountPurchase(day);
        Earnings.AddQualifying(day, entry.Points.Value, entry.AmountMinor);
        if (details is null)
        {
            return;
        }

        Tier = details.TierAfter ?? Tier;
        TierReviewAt = details.TierReviewAt;
        Earnings.CountEarn(details.EarnDay, details.EarnMonth, entry.Points.Value, details.Components, entry.Sequence);
        if (details.ReferrerReward > 0 || HasReferralComponent(details.Components))
        {
            ReferralToChange.Qualify(entry.TransactionId, details.ReferrerReward);
        }
    }

    private static bool HasReferralComponent(IReadOnlyList<BreakdownComponent> components)
    {
        for (int i = 0; i < components.Count; i++)
        {
            if (components[i].Kind == ComponentKind.Referral)
            {
                return true;
            }
        }

        return false;
    }

    private void ApplyReturn(LedgerEntry entry, ReturnProgress? seed)
    {
        ReturnDetails details = entry.DetailsAs<ReturnDetails>() ?? throw new InvalidOperationException($"Return entry {entry.Sequence} has no details.");
        string original = entry.Reference ?? throw new InvalidOperationException($"Return entry {entry.Sequence} names no purchase.");
        Lots.ReversePending(details.PendingLot ?? original, details.PendingAvailableAt, details.PendingReversed);
        Lots.Debit(new Points(details.ActiveReversed), details.Lots);
        Shortfall += new Points(details.Shortfall);
        if (details.ReferralReversed)
        {
            ReferralToChange.Reverse(original);
        }

        foreach (LotUse restored in details.Restored ?? [])
        {
            Lots.Credit(new Points(restored.Points), restored.LotId, restored.ExpiresAt);
            LifetimeRedeemed -= new Points(restored.Points);
        }

        foreach (LotUse expired in details.ExpiredUnrestored ?? [])
        {
            LifetimeRedeemed -= new Points(expired.Points);
            LifetimeExpired += new Points(expired.Points);
        }

        long reversed = checked(details.PendingReversed + details.ActiveReversed + details.Shortfall);
        LifetimeReversed += new Points(reversed);
        GivenMinor += details.GivenMinor;
        WalletMinor += details.WalletMinor;
        ReturnsToChange().Record(original, details, entry.Sequence, seed);
        if (details.BirthdayGiftBack)
        {
            BirthdayGiftUsed = false;
        }
        if (details.OriginalRecordedAt is { } recordedAt && (!details.MergedPurchase || details.MergedQualifying))
        {
            Earnings.AddQualifying(DayOf(recordedAt), -reversed, -details.SpendTakenMinor, createMissing: false);
        }

        if (details.MergedPurchase)
        {
            // The purchase was earned by a duplicate account merged into this one: this member's
            // cap counters never counted it (nor its qualification, unless the merge brought that
            // in), so they are left alone.
            return;
        }

        Earnings.CountReturn(details.EarnDay, details.EarnMonth, reversed, details.Components);
    }

    private void ApplyAdjust(LedgerEntry entry)
    {
        if (entry.Points.Value >= 0)
        {
            Earn(entry);
        }
        else
        {
            Lots.Debit(-entry.Points, entry.DetailsAs<AdjustDetails>()?.Lots);
        }
    }

    private void ApplyRedeem(LedgerEntry entry)
    {
        RedeemDetails? details = entry.DetailsAs<RedeemDetails>();
        BirthdayGiftUsed |= details?.BirthdayGift ?? false;
        Lots.Debit(-entry.Points, details?.Lots);
        LifetimeRedeemed += -entry.Points;
        LastActivityAt = entry.RecordedAt;
        if (entry.Reference is { } reservation)
        {
            Lots.EndHold(reservation);
        }
    }

    private void ApplyReserve(LedgerEntry entry)
    {
        ReserveDetails reserve = entry.DetailsAs<ReserveDetails>() ?? throw new InvalidOperationException($"Reserve entry {entry.Sequence} has no details.");
        // Reservations made before their value was kept have no currency on their entry.
        RewardValue? value = entry.Currency is null ? null : new RewardValue(entry.AmountMinor, entry.Currency, reserve.Cause);
        Lots.AddHold(new Hold(entry.TransactionId!, new Points(reserve.HeldPoints), reserve.LapsesAt ?? entry.RecordedAt, reserve.RewardId ?? "", reserve.Quantity, entry.RecordedAt, entry.StoreId, value));
        LastActivityAt = entry.RecordedAt;
    }

    private void ApplyExpire(LedgerEntry entry)
    {
        Lots.Debit(-entry.Points, entry.DetailsAs<ExpireDetails>()?.Lots);
        LifetimeExpired += -entry.Points;
    }

    private void ApplyReferralLink(LedgerEntry entry)
    {
        if (entry.Reference is { } referred)
        {
            ReferralToChange.Link(referred, entry.RecordedAt, entry.DetailsAs<ReferralLinkDetails>()?.Unconfirmed ?? false);
        }
    }

    private static string ReferredIn(LedgerEntry entry) =>
        entry.Reference ?? throw new InvalidOperationException($"{entry.Kind} entry {entry.Sequence} names no referred member.");

    private void ApplyReferralReward(LedgerEntry entry)
    {
        string referred = entry.Reference ?? throw new InvalidOperationException($"Referral reward {entry.Sequence} names no member.");
        ReferralRewardDetails? details = entry.DetailsAs<ReferralRewardDetails>();
        if (entry.Points.Value >= 0 && !(details?.ReferralReversed ?? false))
        {
            Earn(entry);
            ReferralToChange.Reward(referred, entry.Points.Value);
            return;
        }

        Lots.Debit(-entry.Points, details?.Lots);
        Shortfall += new Points(details?.Shortfall ?? 0);
        LifetimeReversed += new Points(checked(-entry.Points.Value + (details?.Shortfall ?? 0)));
        ReferralToChange.Reward(referred, 0);
    }

    private void ApplyRepointed(LedgerEntry entry)
    {
        if (entry.DetailsAs<RepointedDetails>()?.ReplacedMember is { } replaced && entry.Reference is { } survivor)
        {
            ReferralToChange.Repoint(replaced, survivor);
        }
    }

    private void ApplyProfile(LedgerEntry entry)
    {
        // An erasure leaves the note without its details: no fields, no birthday.
        ProfileDetails? details = entry.DetailsAs<ProfileDetails>();
        HasProfile = details?.ProfileFields is { Count: > 0 };
        BirthMonth = details?.BirthMonth ?? 0;
    }

    private void ApplyErase()
    {
        Erased = true;
        HasProfile = false;
        FlagsKept = null;
        Cause = null;
        BirthMonth = 0;
        // An open gift would tell the month too (its end is the next month's start).
        BirthdayGrant = null;
        // Typed by staff, it may hold personal data (the ledger's copy is anonymised too).
        MergingReason = null;
    }

    private void ApplyBirthday(LedgerEntry entry)
    {
        BirthdayGrant grant = entry.DetailsAs<BirthdayDetails>()?.Birthday ?? throw new InvalidOperationException($"Birthday entry {entry.Sequence} has no grant.");
        Earn(entry);
        BirthdayGrant = grant;
        BirthdayYear = grant.Year;
        BirthdayGiftUsed = false;
    }

    private void ApplyBonusDay(LedgerEntry entry) =>
        (BonusDaysBooked ??= new BookedBonusDays()).Book(entry.DetailsAs<BonusDayBookedDetails>()?.BonusDay ?? throw new InvalidOperationException($"Bonus-day entry {entry.Sequence} has no details."));

    private void ApplyTierReviewed(TierReviewedDetails details)
    {
        Tier = details.TierAfter ?? Tier;
        TierReviewAt = details.TierReviewAt;
    }

    private void ApplyTradeInDecided(LedgerEntry entry)
    {
        TradeInsOpen?.RemoveAll(t => t.TradeInId == entry.Reference);
        WalletMinor += (entry.Details as TradeInAcceptedDetails)?.WalletMinor ?? 0;
    }

    private void ApplyMergedAway(LedgerEntry entry)
    {
        MergedInto = entry.Reference;
        Detached = entry.DetailsAs<MergedAwayDetails>()?.Merge;
        WalletMinor = 0;
        Lots.Clear();
    }

    private void ApplyMergeStarted(LedgerEntry entry)
    {
        MergingFrom = entry.Reference ?? throw new InvalidOperationException($"Merge start {entry.Sequence} names no duplicate.");
        MergingSince = entry.RecordedAt;
        MergingReason = entry.Reason;
    }

    private void ApplyMergeSettled(LedgerEntry entry)
    {
        if (entry.Reference == MergingFrom)
        {
            MergingFrom = null;
            MergingSince = default;
            MergingReason = null;
        }
    }

    private void ApplyMergedIn(LedgerEntry entry)
    {
        MergedInDetails details = entry.DetailsAs<MergedInDetails>() ?? throw new InvalidOperationException($"Merge entry {entry.Sequence} has no details.");
        MergeTransfer t = details.Merge ?? throw new InvalidOperationException($"Merge entry {entry.Sequence} carries no transfer.");
        if (t.HandedOverAt is { } handedOver)
        {
            // The duplicate's points that were pending until then arrive spendable (it matured them
            // on its silo's clock, which may run ahead of this one's). So do this member's own of
            // those days, as the entry proves that time had come: otherwise a lot of this member's
            // would hold a day whose duplicate's points are no longer pending, and a return of the
            // duplicate's purchase would take this member's pending points for its own.
            Lots.Mature(handedOver);
        }

        if (t.Balance < 0)
        {
            Lots.Debit(new Points(-t.Balance), null);
        }

        foreach (LotUse lot in t.Lots)
        {
            Lots.CreditMerged(new Points(lot.Points), lot.LotId, lot.ExpiresAt, warned: lot.ExpiresAt is { } expiry && t.WarnedExpiries?.Contains(expiry) == true);
        }

        foreach (PendingLotUse lot in t.Pending)
        {
            Lots.AddPending(new PendingLot(lot.TransactionId, lot.AvailableAt, new Points(lot.Points), lot.ExpiresAt));
        }

        // The duplicate's giving counts as the member's; each purchase's cause stays in its own entry.
        GivenMinor += t.GivenMinor;
        WalletMinor += t.WalletMinor;
        if (t.TrialsUsed is { Count: > 0 } trials)
        {
            (MembershipKept ??= new MembershipState()).AdoptTrials(trials);
        }

        AdoptBirthdayAndBonusDays(t);

        ReferralToChange.Adopt(t, entry.MemberId, details.InheritsReferrer, details.InheritedAfterPurchases, entry.RecordedAt);
        ReturnsToChange().Adopt(t.Returns, entry.Sequence);
        List<string> mergedFrom = MergedFromKept ??= [];
        mergedFrom.AddRange((t.MergedFrom ?? []).Where(m => !mergedFrom.Contains(m)));
        mergedFrom.Add(t.MemberId);
        if (t.Qualification is { } days)
        {
            // The duplicate's tier window is the person's too (its returns then take off here: see ApplyReturn).
            Earnings.AdoptQualifying(days);
            List<string> qualifyingFrom = QualifyingFromKept ??= [];
            qualifyingFrom.AddRange((t.QualifyingFrom ?? []).Append(t.MemberId).Where(m => !qualifyingFrom.Contains(m)));
        }

        Tier = details.TierAfter ?? Tier;
        TierReviewAt = details.TierAfter is null ? TierReviewAt : details.TierReviewAt;
        LifetimeEarned += new Points(t.LifetimeEarned);
        LifetimeRedeemed += new Points(t.LifetimeRedeemed);
        LifetimeExpired += new Points(t.LifetimeExpired);
        LifetimeReversed += new Points(t.LifetimeReversed);
        // What the duplicate's returns could not take back is the person's (0 in merges recorded before it was handed on).
        if (t.Shortfall != 0)
        {
            Shortfall += new Points(t.Shortfall);
        }

        Earnings.CountMergedPurchases(t.PurchaseCount);
        LastActivityAt = t.LastActivityAt > LastActivityAt ? t.LastActivityAt : LastActivityAt;
        if (t.GrantedIntoEmptyAt is { } granted && !(GrantedIntoEmptyAt >= granted))
        {
            // The duplicate's points keep the inactivity clock a grant started for them.
            GrantedIntoEmptyAt = granted;
        }
    }

    /// <summary>
    /// The duplicate's birthday and bonus days, as one person's: its gift not yet redeemed is the
    /// member's when the member holds none unredeemed of a later month (whether it is still open is
    /// read against the clock, as any gift's); a year's birthday reward taken by either account is
    /// taken for both; the days it booked are booked.
    /// </summary>
    private void AdoptBirthdayAndBonusDays(MergeTransfer t)
    {
        if (t.BirthdayGift is { } gift && (BirthdayGrant is not { GiftRewardId: not null } mine || BirthdayGiftUsed || mine.GiftUntil < gift.GiftUntil))
        {
            BirthdayGrant = gift;
            BirthdayGiftUsed = false;
        }

        if (t.BirthdayYear > BirthdayYear)
        {
            BirthdayYear = t.BirthdayYear;
        }

        foreach (int day in t.BonusDays ?? [])
        {
            (BonusDaysBooked ??= new BookedBonusDays()).Book(day);
        }
    }

    private void ApplyWarning(ExpiryWarningDetails? details)
    {
        if (details?.Lots is { } lots)
        {
            Lots.Warn(lots);
        }

        if (details?.InactivityDeadline is { } deadline)
        {
            InactivityWarnedFor = deadline;
        }
    }

    /// <summary>A lot id for an entry without a transaction id.</summary>
    private static string LotIdOf(LedgerEntry entry) => "#" + entry.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
