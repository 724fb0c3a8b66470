using System.Collections.ObjectModel;

namespace Loyalty.Grains;

/// <summary>
/// A member as its grain holds it in memory, and as it is snapshotted. It changes only through
/// <see cref="Apply"/> (used both for live changes and for replaying the ledger) and
/// <see cref="Mature"/> (a pure function of time), so replay always rebuilds exactly the state
/// that was acknowledged. Apply reads only the entry, never the program's configuration: every
/// decision the rules made is recorded in the entry's details.
/// </summary>
[GenerateSerializer]
public sealed class MemberState : IEarnHistory, IQualifying
{
    /// <summary>The newest transactions, to answer resends from memory; changed only through <see cref="Apply"/>.</summary>
    [Id(41)]
    private RecentTransactions _recent = new();

    /// <summary>The tier every member starts in until the program defines a ladder.</summary>
    public const string DefaultTier = "standard";

    /// <summary>How many days of earn-cap history are kept (a month and then some).</summary>
    private const int CapDaysKept = 62;

    /// <summary>How many months of earn-cap history are kept.</summary>
    private const int CapMonthsKept = 14;

    /// <summary>Sequence of the newest ledger entry applied.</summary>
    [Id(0)] public long Sequence { get; set; }

    /// <summary>Whether an enrolment entry has been applied.</summary>
    [Id(1)] public bool Enrolled { get; set; }

    /// <summary>Spendable (active) points. Negative only under the allow-negative policy.</summary>
    [Id(2)] public Points Balance { get; set; }

    /// <summary>All points ever earned (purchases, sign-up, positive adjustments), before returns.</summary>
    [Id(3)] public Points LifetimeEarned { get; set; }

    /// <summary>The member's tier as of its newest entry.</summary>
    [Id(4)] public string Tier { get; set; } = DefaultTier;

    /// <summary>Who referred this member, if anyone.</summary>
    [Id(5)] public string? ReferredBy { get; set; }

    /// <summary>Whom this member referred, oldest first.</summary>
    [Id(6)] private List<string>? _referrals;

    /// <inheritdoc cref="_referrals"/>
    public IReadOnlyList<string> Referrals => (IReadOnlyList<string>?)_referrals ?? [];

    /// <summary>When the member enrolled.</summary>
    [Id(7)] public DateTimeOffset EnrolledAt { get; set; }

    /// <summary>Earned points not yet spendable, one lot per purchase, in order of availability.</summary>
    [Id(9)] private List<PendingLot>? _pending;

    /// <inheritdoc cref="_pending"/>
    public IReadOnlyList<PendingLot> Pending => (IReadOnlyList<PendingLot>?)_pending ?? [];

    /// <summary>When the tier is next reviewed for a downgrade; null in the entry tier.</summary>
    [Id(10)] public DateTimeOffset? TierReviewAt { get; set; }

    /// <summary>Qualifying points and spend per UTC day of recording, oldest first.</summary>
    [Id(11)] public List<QualifyingDay> Qualification { get; set; } = [];

    /// <summary>Points earned per program-local day (DayNumber), for the daily cap.</summary>
    [Id(12)] public Dictionary<int, long> EarnedByDay { get; set; } = [];

    /// <summary>Points earned per program-local month, for the monthly cap.</summary>
    [Id(13)] public Dictionary<int, long> EarnedByMonth { get; set; } = [];

    /// <summary>Points earned per campaign, net of returns, for campaign caps.</summary>
    [Id(14)] private Dictionary<string, long>? _campaignEarned;

    /// <inheritdoc cref="_campaignEarned"/>
    public IReadOnlyDictionary<string, long> CampaignEarned => (IReadOnlyDictionary<string, long>?)_campaignEarned ?? ReadOnlyDictionary<string, long>.Empty;

    /// <summary>
    /// The return progress of the member's most recently returned purchases (at most
    /// <see cref="ReturnsKept"/>), by transaction id. The rest is read from the ledger when one of
    /// them is returned again or looked up (<see cref="RememberReturns"/>).
    /// </summary>
    [Id(15)] private Dictionary<string, ReturnProgress>? _returns;

    /// <summary>How many purchases' return progress a member keeps in memory.</summary>
    public const int ReturnsKept = 256;

    /// <inheritdoc cref="_returns"/>
    public IReadOnlyDictionary<string, ReturnProgress> Returns => (IReadOnlyDictionary<string, ReturnProgress>?)_returns ?? ReadOnlyDictionary<string, ReturnProgress>.Empty;

    /// <summary>The member's flags, e.g. "storecard".</summary>
    [Id(16)] private List<string>? _flags;

    /// <inheritdoc cref="_flags"/>
    public IReadOnlyList<string> Flags => (IReadOnlyList<string>?)_flags ?? [];

    /// <summary>Points returns could not take back because the balance was floored at zero.</summary>
    [Id(17)] public Points Shortfall { get; set; }

    /// <summary>All points reversed by returns.</summary>
    [Id(18)] public Points LifetimeReversed { get; set; }

    /// <summary>
    /// The spendable points by lot, soonest expiry first (lots that never expire last). Their sum
    /// is the balance when it is positive; a negative balance has no lots, and later credit pays
    /// the debt before it makes a lot.
    /// </summary>
    [Id(19)] public List<PointLot> Lots { get; set; } = [];

    /// <summary>Open reservations: points held at a till until committed, cancelled or lapsed.</summary>
    [Id(20)] private List<Hold>? _holds;

    /// <inheritdoc cref="_holds"/>
    public IReadOnlyList<Hold> Holds => (IReadOnlyList<Hold>?)_holds ?? [];

    /// <summary>The newest member activity (enrolment, earn, redeem, reservation), for the inactivity rule.</summary>
    [Id(21)] public DateTimeOffset LastActivityAt { get; set; }

    /// <summary>The inactivity deadline the member was last warned about.</summary>
    [Id(22)] public DateTimeOffset? InactivityWarnedFor { get; set; }

    /// <summary>All points spent on rewards.</summary>
    [Id(23)] public Points LifetimeRedeemed { get; set; }

    /// <summary>All points that expired (breakage).</summary>
    [Id(24)] public Points LifetimeExpired { get; set; }

    /// <summary>When each referral in <see cref="Referrals"/> was made (same order), for the referral cap.</summary>
    [Id(25)] private List<DateTimeOffset>? _referredAt;

    /// <inheritdoc cref="_referredAt"/>
    public IReadOnlyList<DateTimeOffset> ReferredAt => (IReadOnlyList<DateTimeOffset>?)_referredAt ?? [];

    /// <summary>The purchase that qualified this referred member (and rewarded both sides); null before it.</summary>
    [Id(26)] public string? ReferralQualifiedBy { get; set; }

    /// <summary>The reward the referrer is owed for this member's qualifying purchase.</summary>
    [Id(27)] public long ReferrerRewardOwed { get; set; }

    /// <summary>The qualifying purchase was returned in full: both referral rewards are reversed.</summary>
    [Id(28)] public bool ReferralReversed { get; set; }

    /// <summary>As a referrer: the reward credited per referred member (0 once reversed).</summary>
    [Id(29)] private Dictionary<string, long>? _referralRewards;

    /// <inheritdoc cref="_referralRewards"/>
    public IReadOnlyDictionary<string, long> ReferralRewards => (IReadOnlyDictionary<string, long>?)_referralRewards ?? ReadOnlyDictionary<string, long>.Empty;

    /// <summary>Purchases accepted (earn entries), returned or not.</summary>
    [Id(30)] public long PurchaseCount { get; set; }

    /// <summary>The member's personal data was erased; it takes no more changes.</summary>
    [Id(31)] public bool Erased { get; set; }

    /// <summary>The member this duplicate account was merged into; it takes no more changes.</summary>
    [Id(32)] public string? MergedInto { get; set; }

    /// <summary>What this account handed over when it was merged away (to answer a repeated merge).</summary>
    [Id(33)] public MergeTransfer? Detached { get; set; }

    /// <summary>Duplicate accounts merged into this one.</summary>
    [Id(34)] private List<string>? _mergedFrom;

    /// <inheritdoc cref="_mergedFrom"/>
    public IReadOnlyList<string> MergedFrom => (IReadOnlyList<string>?)_mergedFrom ?? [];

    /// <summary>Whether the member has profile fields (kept outside the ledger).</summary>
    [Id(35)] public bool HasProfile { get; set; }

    /// <summary>The referrer has recorded its reward for this member's qualifying purchase.</summary>
    [Id(36)] public bool RewardSettled { get; set; }

    /// <summary>The referrer has recorded the reversal of that reward.</summary>
    [Id(37)] public bool ReversalSettled { get; set; }

    /// <summary>
    /// The member id under which the referrer recorded this member's referral: its own, or that of
    /// a duplicate merged into it whose referral it took over. Null means its own.
    /// </summary>
    [Id(38)] public string? ReferralSubject { get; set; }

    /// <summary>
    /// The sum of the magnitudes of every entry applied (see <see cref="Headroom"/>): every counter
    /// here is bounded by it in absolute value, and decisions keep it within
    /// <see cref="Headroom.VolumeMax"/>, so applying an admitted entry cannot overflow.
    /// </summary>
    [Id(39)] public long Volume { get; set; }

    /// <summary>
    /// The snapshot format this state was written in; a snapshot of another format is ignored and
    /// the member is rebuilt from its ledger alone. Zero in states written before formats were kept.
    /// </summary>
    [Id(40)] public int Format { get; set; }

    /// <summary>The UTC day (day number) of the member's last purchase; 0 before the first.</summary>
    [Id(43)] public int LastPurchaseDay { get; set; }

    /// <summary>Purchases, at most 2, in the day, week, month and year of <see cref="LastPurchaseDay"/> (<see cref="PurchaseActivity"/>).</summary>
    [Id(44)] public int PurchasesInPeriods { get; set; }

    /// <summary>The personal bonus days the member booked; made on the first booking.</summary>
    [Id(45)] private BookedBonusDays? _bonusDays;

    /// <inheritdoc cref="_bonusDays"/>
    public BookedBonusDays BonusDays => _bonusDays ?? NoBonusDays;

    private static readonly BookedBonusDays NoBonusDays = new();

    /// <summary>The cause the member chose for its purchases to give to; null when none.</summary>
    [Id(46)] public string? Cause { get; private set; }

    /// <summary>Money the member's purchases gave to causes, net of returns, in minor units.</summary>
    [Id(47)] public long GivenMinor { get; private set; }

    /// <summary>The month (1..12) of the birthday in the member's profile; 0 when it has none.</summary>
    [Id(48)] public int BirthMonth { get; private set; }

    /// <summary>The newest year the member's birthday was rewarded; 0 before the first.</summary>
    [Id(49)] public int BirthdayYear { get; private set; }

    /// <summary>The newest birthday's grant, with its gift; null before the first.</summary>
    [Id(50)] public BirthdayGrant? BirthdayGrant { get; private set; }

    /// <summary>The newest birthday's gift has been redeemed.</summary>
    [Id(51)] public bool BirthdayGiftUsed { get; private set; }

    /// <summary>The member's paid membership; made on its first membership entry.</summary>
    [Id(52)] private MembershipState? _membership;

    /// <inheritdoc cref="_membership"/>
    public MembershipState Membership => _membership ?? NoMembership;

    private static readonly MembershipState NoMembership = new();

    /// <summary>The store-credit wallet, in minor units: trade-in credit less what purchases spent, plus refunds.</summary>
    [Id(53)] public long WalletMinor { get; private set; }

    /// <summary>Trade-ins waiting for inspection, oldest first; decisions keep them at most <see cref="Limits.OpenTradeInsMax"/>.</summary>
    [Id(54)] private List<OpenTradeIn>? _tradeIns;

    /// <inheritdoc cref="_tradeIns"/>
    public IReadOnlyList<OpenTradeIn> TradeIns => (IReadOnlyList<OpenTradeIn>?)_tradeIns ?? [];

    /// <summary>The birthday gift the member may redeem at <paramref name="now"/>; null when none is open.</summary>
    public BirthdayGrant? OpenBirthdayGift(DateTimeOffset now) =>
        BirthdayGrant is { GiftRewardId: not null } grant && !BirthdayGiftUsed && now < grant.GiftUntil ? grant : null;

    /// <summary>
    /// The format of snapshots this version writes (3: <see cref="Volume"/> is kept, collections
    /// made on first use; 4: the purchase activity of <see cref="LastPurchaseDay"/> is kept).
    /// </summary>
    public const int CurrentFormat = 4;

    /// <summary>
    /// What a member grain's snapshot slot holds between reads and writes, so that the grain keeps
    /// one state in memory, not two. Never changed, never written (its format is not current).
    /// </summary>
    public static MemberState Placeholder { get; } = new();

    /// <summary>Whether the referrer still has to record its reward, or its reversal.</summary>
    public bool ReferralOwed => ReferredBy is not null
        && ((ReferrerRewardOwed > 0 && !RewardSettled) || (ReferralReversed && !ReversalSettled));

    /// <summary>Referrals made in the <paramref name="days"/> days before <paramref name="now"/>.</summary>
    public int ReferralsSince(DateTimeOffset now, int days)
    {
        DateTimeOffset from = now.AddDays(-days);
        int count = 0;
        for (int i = ReferredAt.Count - 1; i >= 0 && ReferredAt[i] > from; i--)
        {
            count++;
        }

        return count;
    }

    /// <summary>Points held by reservations that have not lapsed by <paramref name="now"/>.</summary>
    public Points HeldAt(DateTimeOffset now)
    {
        Points held = Points.Zero;
        foreach (Hold hold in Holds)
        {
            if (hold.LapsesAt > now)
            {
                held += hold.Points;
            }
        }

        return held;
    }

    /// <summary>The open reservation with this id, or null.</summary>
    public Hold? FindHold(string reservationId) => _holds?.Find(h => h.ReservationId == reservationId);

    /// <summary>Points earned and not yet spendable.</summary>
    public Points PendingTotal
    {
        get
        {
            Points total = Points.Zero;
            foreach (PendingLot lot in Pending)
            {
                total += lot.Points;
            }

            return total;
        }
    }

    /// <summary>Moves every pending lot available by <paramref name="now"/> into the balance.</summary>
    public void Mature(DateTimeOffset now)
    {
        if (_pending is not { Count: > 0 } pending)
        {
            return;
        }

        int matured = 0;
        while (matured < pending.Count && pending[matured].AvailableAt <= now)
        {
            PendingLot lot = pending[matured];
            Credit(lot.Points, lot.TransactionId, lot.ExpiresAt);
            matured++;
        }

        if (matured > 0)
        {
            pending.RemoveRange(0, matured);
        }
    }

    /// <summary>
    /// Applies one ledger entry. Throws when entries arrive out of order, before changing anything.
    /// A live entry was admitted by <see cref="Headroom.Refuse"/>, so nothing below can overflow.
    /// </summary>
    public void Apply(LedgerEntry entry, int recentMax)
    {
        if (entry.Sequence <= Sequence)
        {
            throw new InvalidOperationException($"Ledger entry {entry.Sequence} applied after {Sequence}.");
        }

        Volume = checked(Volume + Headroom.MagnitudeOf(entry));
        Sequence = entry.Sequence;
        Mature(entry.RecordedAt);
        switch (entry.Kind)
        {
            case LedgerEntryKind.Enrol:
                ApplyEnrol(entry);
                break;
            case LedgerEntryKind.Earn:
                ApplyEarn(entry);
                GivenMinor += entry.Details?.GivenMinor ?? 0;
                WalletMinor += entry.Details?.WalletMinor ?? 0;
                break;
            case LedgerEntryKind.Return:
                ApplyReturn(entry);
                GivenMinor += entry.Details?.GivenMinor ?? 0;
                WalletMinor += entry.Details?.WalletMinor ?? 0;
                break;
            case LedgerEntryKind.TradeInSubmitted:
                (_tradeIns ??= []).Add(new OpenTradeIn(entry.TransactionId!, entry.Details?.TradeIn?.Category ?? "", entry.RecordedAt));
                break;
            case LedgerEntryKind.TradeInAccepted or LedgerEntryKind.TradeInRejected:
                _tradeIns?.RemoveAll(t => t.TradeInId == entry.Reference);
                WalletMinor += entry.Details?.WalletMinor ?? 0;
                break;
            case LedgerEntryKind.Feedback:
                Credit(entry.Points, entry.TransactionId ?? LotIdOf(entry), entry.Details?.ExpiresAt);
                LifetimeEarned += entry.Points;
                break;
            case LedgerEntryKind.Adjust when entry.Points.Value >= 0:
                Credit(entry.Points, entry.TransactionId ?? LotIdOf(entry), entry.Details?.ExpiresAt);
                LifetimeEarned += entry.Points;
                break;
            case LedgerEntryKind.Adjust:
                Debit(-entry.Points, entry.Details?.Lots);
                break;
            case LedgerEntryKind.Redeem:
                ApplyRedeem(entry);
                break;
            case LedgerEntryKind.Reserve:
                EntryDetails reserve = entry.Details ?? throw new InvalidOperationException($"Reserve entry {entry.Sequence} has no details.");
                (_holds ??= []).Add(new Hold
                {
                    ReservationId = entry.TransactionId!, Points = new Points(reserve.HeldPoints), LapsesAt = reserve.LapsesAt ?? entry.RecordedAt,
                    RewardId = reserve.RewardId ?? "", Quantity = reserve.Quantity,
                });
                LastActivityAt = entry.RecordedAt;
                break;
            case LedgerEntryKind.ReservationEnd when entry.Reference is not null:
                _holds?.RemoveAll(h => h.ReservationId == entry.Reference);
                break;
            case LedgerEntryKind.Expire:
                Debit(-entry.Points, entry.Details?.Lots);
                LifetimeExpired += -entry.Points;
                break;
            case LedgerEntryKind.ExpiryWarning:
                ApplyWarning(entry.Details);
                break;
            case LedgerEntryKind.Flags:
                _flags = entry.Details?.Flags is { Count: > 0 } flags ? [.. flags] : null;
                break;
            case LedgerEntryKind.ReferralLink when entry.Reference is not null && !Referrals.Contains(entry.Reference):
                (_referrals ??= []).Add(entry.Reference);
                (_referredAt ??= []).Add(entry.RecordedAt);
                break;
            case LedgerEntryKind.Referred:
                ReferredBy = entry.Reference;
                break;
            case LedgerEntryKind.ReferralReward:
                ApplyReferralReward(entry);
                break;
            case LedgerEntryKind.ReferralSettled:
                RewardSettled |= entry.Details?.ReferrerReward > 0;
                ReversalSettled |= entry.Details?.ReferralReversed ?? false;
                break;
            case LedgerEntryKind.Profile:
                HasProfile = entry.Details?.ProfileFields is { Count: > 0 };
                BirthMonth = entry.Details?.BirthMonth ?? 0;
                break;
            case LedgerEntryKind.Birthday:
                Credit(entry.Points, entry.TransactionId ?? LotIdOf(entry), entry.Details?.ExpiresAt);
                LifetimeEarned += entry.Points;
                BirthdayGrant = entry.Details?.Birthday ?? throw new InvalidOperationException($"Birthday entry {entry.Sequence} has no grant.");
                BirthdayYear = BirthdayGrant.Year;
                BirthdayGiftUsed = false;
                break;
            case LedgerEntryKind.Erase:
                Erased = true;
                HasProfile = false;
                _flags = null;
                Cause = null;
                BirthMonth = 0;
                break;
            case LedgerEntryKind.MergedAway:
                ApplyMergedAway(entry);
                break;
            case LedgerEntryKind.MergedIn:
                ApplyMergedIn(entry);
                break;
            case LedgerEntryKind.MembershipStarted or LedgerEntryKind.MembershipRenewed or LedgerEntryKind.MembershipCancelled or LedgerEntryKind.MembershipLapsed:
                (_membership ??= new MembershipState()).Apply(entry);
                break;
            case LedgerEntryKind.CauseChosen:
                Cause = entry.Reference;
                break;
            case LedgerEntryKind.BonusDayBooked:
                (_bonusDays ??= new BookedBonusDays()).Book(entry.Details?.BonusDay ?? throw new InvalidOperationException($"Bonus-day entry {entry.Sequence} has no details."));
                break;
            case LedgerEntryKind.Repointed when entry.Details?.ReplacedMember is { } replaced && entry.Reference is { } survivor:
                int at = _referrals?.IndexOf(replaced) ?? -1;
                if (at >= 0)
                {
                    _referrals![at] = survivor;
                }

                ReferredBy = ReferredBy == replaced ? survivor : ReferredBy;
                break;
        }

        if (entry.TransactionId is not null)
        {
            _recent.Add(entry.TransactionId, entry.Fingerprint, entry.Points, entry.Sequence, recentMax);
        }
    }

    /// <summary>
    /// What every apply must leave true: the lots hold exactly the positive balance, soonest
    /// expiry first; pending lots are in order of availability. (The limits on referrals and
    /// merges are decisions, not invariants: a merge cut short after the duplicate let go is
    /// completed even at the limit, so that no points are stranded.) A
    /// breach is a bug; it throws, and the member grain (which marks its state invalid while an
    /// entry applies, and checks after every live apply) rebuilds the member from its ledger
    /// instead of serving a broken state. Replay does not check: a ledger written by an older
    /// version (more merges than the limit allows now, say) must still load.
    /// </summary>
    public void AssertInvariants(LedgerEntry entry)
    {
        long inLots = 0;
        for (int i = 0; i < Lots.Count; i++)
        {
            inLots += Lots[i].Points.Value;
            if (Lots[i].Points.Value <= 0 || (i > 0 && Later(Lots[i - 1].ExpiresAt, Lots[i].ExpiresAt)))
            {
                throw new InvalidOperationException($"After entry {entry.Sequence}: lot {i} is empty or out of expiry order.");
            }
        }

        for (int i = 1; i < Pending.Count; i++)
        {
            if (Pending[i - 1].AvailableAt > Pending[i].AvailableAt)
            {
                throw new InvalidOperationException($"After entry {entry.Sequence}: pending lots are out of order.");
            }
        }

        if (inLots != Math.Max(0, Balance.Value))
        {
            throw new InvalidOperationException($"After entry {entry.Sequence}: lots hold {inLots} for a balance of {Balance.Value}.");
        }

        if (Returns.Count > ReturnsKept)
        {
            throw new InvalidOperationException($"After entry {entry.Sequence}: {Returns.Count} purchases' return progress kept, more than {ReturnsKept}.");
        }
    }

    /// <summary>
    /// Adds spendable points to the lot of their expiry, or a new lot. Lots are per expiry, not
    /// per purchase: points that expire together are spent and expire together, so the lots stay
    /// few however many purchases a member makes. A negative balance (a debt left by returns) is
    /// paid first; only what is left over goes to a lot.
    /// </summary>
    public void Credit(Points points, string lotId, DateTimeOffset? expiresAt)
    {
        long debt = Balance.Value < 0 ? -Balance.Value : 0;
        long toLot = points.Value - Math.Min(points.Value, debt);
        Balance += points;
        if (toLot <= 0)
        {
            return;
        }

        // Soonest expiry first, never-expiring last; new points usually expire last, so search from the end.
        int at = Lots.Count;
        while (at > 0 && Later(Lots[at - 1].ExpiresAt, expiresAt))
        {
            at--;
        }

        if (at > 0 && Lots[at - 1].ExpiresAt == expiresAt)
        {
            Lots[at - 1].Points += new Points(toLot);
            return;
        }

        Lots.Insert(at, new PointLot { Id = lotId, Points = new Points(toLot), ExpiresAt = expiresAt });
    }

    /// <summary>
    /// Which lots <paramref name="points"/> would come from: when <paramref name="prefer"/> is
    /// set, the lot expiring at <paramref name="preferredExpiry"/> first (a return takes back its
    /// own purchase's points, so other points keep their dates), then the soonest to expire. The
    /// plan may cover less than asked when the lots run out.
    /// </summary>
    public List<LotUse> PlanDebit(long points, bool prefer = false, DateTimeOffset? preferredExpiry = null)
    {
        var plan = new List<LotUse>();
        long left = points;
        PointLot? own = prefer ? Lots.Find(l => l.ExpiresAt == preferredExpiry) : null;
        if (own is not null)
        {
            left -= Take(plan, own, left);
        }

        foreach (PointLot lot in Lots)
        {
            if (left <= 0)
            {
                break;
            }

            if (!ReferenceEquals(lot, own))
            {
                left -= Take(plan, lot, left);
            }
        }

        return plan;

        static long Take(List<LotUse> plan, PointLot lot, long wanted)
        {
            long take = Math.Min(wanted, lot.Points.Value);
            if (take > 0)
            {
                plan.Add(new LotUse(lot.Id, take, lot.ExpiresAt));
            }

            return take;
        }
    }

    /// <summary>
    /// Takes points out of the balance, from the lots of <paramref name="plan"/> (computed now when
    /// an older entry carries none). Whatever the lots do not cover becomes a negative balance.
    /// </summary>
    public void Debit(Points points, IReadOnlyList<LotUse>? plan)
    {
        foreach (LotUse use in plan ?? PlanDebit(points.Value))
        {
            // One lot per expiry: the expiry identifies it (its name is the first contributor's).
            int at = Lots.FindIndex(l => l.ExpiresAt == use.ExpiresAt);
            if (at < 0)
            {
                throw new InvalidOperationException($"No lot expiring {use.ExpiresAt:O} ({use.LotId}) is held by the member.");
            }

            Lots[at].Points -= new Points(use.Points);
            if (Lots[at].Points.Value <= 0)
            {
                Lots.RemoveAt(at);
            }
        }

        Balance -= points;
    }

    /// <summary>
    /// Old snapshots kept only a balance: give any spendable points no lot holds one lot that
    /// never expires, so the lots add up to the balance again.
    /// </summary>
    public void ReconcileLots()
    {
        long inLots = 0;
        foreach (PointLot lot in Lots)
        {
            inLots = checked(inLots + lot.Points.Value);
        }

        long missing = Math.Max(0, Balance.Value) - inLots;
        if (missing > 0)
        {
            // Into the never-expiring lot (made when missing), without touching the balance.
            if (Lots.Count > 0 && Lots[^1].ExpiresAt is null)
            {
                Lots[^1].Points += new Points(missing);
            }
            else
            {
                Lots.Add(new PointLot { Id = "#balance", Points = new Points(missing), ExpiresAt = null });
            }
        }
    }

    /// <summary>
    /// The remembered transaction whose id hashes like this one, or null; see
    /// <see cref="RecentTransactions"/> for what a match means.
    /// </summary>
    public Remembered? FindRecent(string transactionId) => _recent.Find(transactionId);

    /// <summary>How many transactions are remembered.</summary>
    public int RecentCount => _recent.Count;

    /// <inheritdoc />
    long IEarnHistory.CampaignEarned(string campaignId) => _campaignEarned?.GetValueOrDefault(campaignId) ?? 0;

    /// <inheritdoc />
    long IEarnHistory.EarnedOnDay(int day) => EarnedByDay.GetValueOrDefault(day);

    /// <inheritdoc />
    long IEarnHistory.EarnedInMonth(int month) => EarnedByMonth.GetValueOrDefault(month);

    /// <inheritdoc />
    bool IEarnHistory.IsBonusDay(int day) => _bonusDays?.Contains(day) ?? false;

    /// <inheritdoc />
    long IQualifying.QualifyingAt(TierLadder ladder, DateTimeOffset at)
    {
        (long points, long spend) = QualifyingAt(at, ladder.WindowDays);
        return ladder.Basis == TierBasis.Points ? points : spend;
    }

    /// <summary>Qualifying points and spend recorded in the window of <paramref name="windowDays"/> days ending at <paramref name="at"/>.</summary>
    public (long Points, long Spend) QualifyingAt(DateTimeOffset at, int windowDays)
    {
        int last = DayOf(at);
        int first = last - windowDays + 1;
        long points = 0, spend = 0;
        // Days are in order: walk back from the newest and stop at the window's start.
        for (int i = Qualification.Count - 1; i >= 0 && Qualification[i].Day >= first; i--)
        {
            if (Qualification[i].Day <= last)
            {
                points = checked(points + Qualification[i].Points);
                spend = checked(spend + Qualification[i].Spend);
            }
        }

        return (points, spend);
    }

    /// <summary>The pending lot of a purchase, or null once it is spendable (or fully reversed).</summary>
    public PendingLot? FindPending(string transactionId) => _pending?.Find(l => l.TransactionId == transactionId);

    /// <summary>The member as queries see it; <paramref name="tier"/> is the tier after any review due now.</summary>
    public MemberView ToView(string programId, string memberId, string tier, DateTimeOffset? reviewAt, long qualifying, IReadOnlyList<string> perks) =>
        new(programId, memberId, Balance, tier, ReferredBy, [.. Referrals], LifetimeEarned, EnrolledAt, Sequence,
            PendingTotal, [.. Pending.Select(l => new PendingPoints(l.TransactionId, l.Points, l.AvailableAt))],
            [.. Flags], reviewAt, qualifying, perks, Shortfall, LifetimeReversed);

    /// <summary>The UTC calendar day of an instant, as a day number.</summary>
    public static int DayOf(DateTimeOffset at) => DateOnly.FromDateTime(at.UtcDateTime).DayNumber;

    private void ApplyEnrol(LedgerEntry entry)
    {
        Enrolled = true;
        EnrolledAt = entry.OccurredAt;
        ReferredBy = entry.Reference;
        Credit(entry.Points, "#signup", entry.Details?.ExpiresAt);
        LifetimeEarned += entry.Points;
        LastActivityAt = entry.RecordedAt;
        Tier = entry.Details?.TierAfter ?? DefaultTier;
        TierReviewAt = null;
    }

    private void ApplyEarn(LedgerEntry entry)
    {
        if (entry.AvailableAt is { } availableAt && availableAt > entry.RecordedAt && entry.Points.Value > 0)
        {
            AddPending(new PendingLot { TransactionId = entry.TransactionId!, AvailableAt = availableAt, Points = entry.Points, ExpiresAt = entry.Details?.ExpiresAt });
        }
        else if (entry.Points.Value > 0)
        {
            Credit(entry.Points, entry.TransactionId!, entry.Details?.ExpiresAt);
        }

        LifetimeEarned += entry.Points;
        LastActivityAt = entry.RecordedAt;
        int day = DayOf(entry.RecordedAt);
        PurchasesInPeriods = PurchaseActivity.Advance(LastPurchaseDay, PurchasesInPeriods, PurchaseCount, day);
        LastPurchaseDay = day;
        PurchaseCount++;
        EntryDetails? details = entry.Details;
        AddQualifying(DayOf(entry.RecordedAt), entry.Points.Value, entry.AmountMinor);
        if (details is null)
        {
            return;
        }

        Tier = details.TierAfter ?? Tier;
        TierReviewAt = details.TierReviewAt;
        AddCapped(EarnedByDay, details.EarnDay, entry.Points.Value, CapDaysKept);
        AddCapped(EarnedByMonth, details.EarnMonth, entry.Points.Value, CapMonthsKept);
        bool referral = details.ReferrerReward > 0;
        foreach (BreakdownComponent c in details.Components)
        {
            if (c.Kind == ComponentKind.Campaign)
            {
                Dictionary<string, long> campaigns = _campaignEarned ??= new(StringComparer.Ordinal);
                campaigns[c.Code] = checked(campaigns.GetValueOrDefault(c.Code) + c.Points);
            }

            referral |= c.Kind == ComponentKind.Referral;
        }

        if (referral)
        {
            ReferralQualifiedBy = entry.TransactionId;
            ReferrerRewardOwed = details.ReferrerReward;
        }
    }

    private void ApplyReturn(LedgerEntry entry)
    {
        EntryDetails details = entry.Details ?? throw new InvalidOperationException($"Return entry {entry.Sequence} has no details.");
        string original = entry.Reference ?? throw new InvalidOperationException($"Return entry {entry.Sequence} names no purchase.");
        if (details.PendingReversed > 0 && FindPending(original) is { } lot)
        {
            lot.Points -= new Points(details.PendingReversed);
            if (lot.Points.Value <= 0)
            {
                _pending!.Remove(lot);
            }
        }

        Debit(new Points(details.ActiveReversed), details.Lots);
        Shortfall += new Points(details.Shortfall);
        ReferralReversed |= details.ReferralReversed;
        foreach (LotUse restored in details.Restored ?? [])
        {
            Credit(new Points(restored.Points), restored.LotId, restored.ExpiresAt);
            LifetimeRedeemed -= new Points(restored.Points);
        }

        long reversed = checked(details.PendingReversed + details.ActiveReversed + details.Shortfall);
        LifetimeReversed += new Points(reversed);
        RecordProgress(original, details, entry.Sequence);
        if (details.MergedPurchase)
        {
            // The purchase was earned by a duplicate account merged into this one: this member's
            // qualification and cap counters never counted it, so they are left alone.
            return;
        }

        if (details.OriginalRecordedAt is { } recordedAt)
        {
            AddQualifying(DayOf(recordedAt), -reversed, -details.ReturnedAmountMinor, createMissing: false);
        }

        AddCapped(EarnedByDay, details.EarnDay, -reversed, CapDaysKept, createMissing: false);
        AddCapped(EarnedByMonth, details.EarnMonth, -reversed, CapMonthsKept, createMissing: false);
        foreach (BreakdownComponent c in details.Components)
        {
            if (c.Kind == ComponentKind.Campaign && _campaignEarned is { } campaigns && campaigns.TryGetValue(c.Code, out long earned))
            {
                campaigns[c.Code] = checked(earned - c.Points);
            }
        }
    }

    private void ApplyRedeem(LedgerEntry entry)
    {
        BirthdayGiftUsed |= entry.Details?.BirthdayGift ?? false;
        Debit(-entry.Points, entry.Details?.Lots);
        LifetimeRedeemed += -entry.Points;
        LastActivityAt = entry.RecordedAt;
        if (entry.Reference is { } reservation)
        {
            _holds?.RemoveAll(h => h.ReservationId == reservation);
        }
    }

    private void ApplyReferralReward(LedgerEntry entry)
    {
        string referred = entry.Reference ?? throw new InvalidOperationException($"Referral reward {entry.Sequence} names no member.");
        if (entry.Points.Value >= 0 && !(entry.Details?.ReferralReversed ?? false))
        {
            Credit(entry.Points, entry.TransactionId ?? LotIdOf(entry), entry.Details?.ExpiresAt);
            LifetimeEarned += entry.Points;
            (_referralRewards ??= new(StringComparer.Ordinal))[referred] = entry.Points.Value;
            return;
        }

        Debit(-entry.Points, entry.Details?.Lots);
        Shortfall += new Points(entry.Details?.Shortfall ?? 0);
        LifetimeReversed += new Points(checked(-entry.Points.Value + (entry.Details?.Shortfall ?? 0)));
        (_referralRewards ??= new(StringComparer.Ordinal))[referred] = 0;
    }

    /// <summary>The hand-over of a merge, from this member's state (mature its pending lots first).</summary>
    public MergeTransfer TransferOf(string memberId, string tier, DateTimeOffset? tierReviewAt) => new(
        memberId, Balance.Value,
        [.. Lots.Select(l => new LotUse(l.Id, l.Points.Value, l.ExpiresAt))],
        [.. Pending.Select(p => new PendingLotUse(p.TransactionId, p.Points.Value, p.AvailableAt, p.ExpiresAt))],
        tier, tierReviewAt, ReferredBy, [.. Referrals],
        LifetimeEarned.Value, LifetimeRedeemed.Value, LifetimeExpired.Value, LifetimeReversed.Value,
        [.. Returns.Select(r => new ReturnedSoFar(r.Key, r.Value.ByLines, r.Value.AmountReturnedMinor, new Dictionary<string, long>(r.Value.SkuReturnedMinor), [.. r.Value.Reversed],
            new Dictionary<string, long>(r.Value.SkuReturnedQuantity)))],
        PurchaseCount, ReferralQualifiedBy, ReferralReversed, LastActivityAt,
        new ReferralStatus(ReferralSubject ?? memberId, ReferrerRewardOwed, RewardSettled, ReversalSettled),
        new Dictionary<string, long>(ReferralRewards, StringComparer.Ordinal),
        [.. MergedFrom], GivenMinor, WalletMinor);

    private void ApplyMergedAway(LedgerEntry entry)
    {
        MergedInto = entry.Reference;
        Detached = entry.Details?.Merge;
        Balance = Points.Zero;
        WalletMinor = 0;
        Lots.Clear();
        _pending = null;
        _holds = null;
    }

    private void ApplyMergedIn(LedgerEntry entry)
    {
        MergeTransfer t = entry.Details?.Merge ?? throw new InvalidOperationException($"Merge entry {entry.Sequence} carries no transfer.");
        if (t.Balance < 0)
        {
            Debit(new Points(-t.Balance), null);
        }

        foreach (LotUse lot in t.Lots)
        {
            Credit(new Points(lot.Points), lot.LotId, lot.ExpiresAt);
        }

        // The duplicate's giving counts as the member's; each purchase's cause stays in its own entry.
        GivenMinor += t.GivenMinor;
        WalletMinor += t.WalletMinor;
        foreach (PendingLotUse lot in t.Pending)
        {
            AddPending(new PendingLot { TransactionId = lot.TransactionId, Points = new Points(lot.Points), AvailableAt = lot.AvailableAt, ExpiresAt = lot.ExpiresAt });
        }

        foreach (string referred in t.Referrals.Where(r => !Referrals.Contains(r)))
        {
            (_referrals ??= []).Add(referred);
            (_referredAt ??= []).Add(entry.RecordedAt);
        }

        foreach (ReturnedSoFar r in t.Returns)
        {
            // Taken as incomplete: the duplicate may have forgotten older returns, so the ledger is asked again.
            (_returns ??= new(StringComparer.Ordinal))[r.TransactionId] = new ReturnProgress
            {
                ByLines = r.ByLines, AmountReturnedMinor = r.AmountReturnedMinor,
                SkuReturnedMinor = new Dictionary<string, long>(r.SkuReturnedMinor, StringComparer.Ordinal), Reversed = [.. r.Reversed],
                SkuReturnedQuantity = new Dictionary<string, long>(r.SkuReturnedQuantity ?? new Dictionary<string, long>(), StringComparer.Ordinal),
                Touched = entry.Sequence, Count = 1,
            };
        }

        ForgetOldestReturns();

        if (entry.Details.InheritsReferrer)
        {
            // The duplicate's referral carries on here, under the id the referrer knows it by, so it
            // is never rewarded twice and its reversal reaches the reward that was given.
            ReferredBy = t.ReferredBy;
            ReferralQualifiedBy = t.ReferralQualifiedBy ?? (t.PurchaseCount > 0 ? "#merged" : null);
            ReferralReversed = t.ReferralReversed;
            ReferrerRewardOwed = t.Referral?.RewardOwed ?? 0;
            RewardSettled = t.Referral?.RewardSettled ?? true;
            ReversalSettled = t.Referral?.ReversalSettled ?? false;
            ReferralSubject = t.Referral?.Subject ?? t.MemberId;
        }

        foreach ((string referred, long points) in t.ReferralRewards ?? new Dictionary<string, long>())
        {
            (_referralRewards ??= new(StringComparer.Ordinal)).TryAdd(referred, points);
        }

        List<string> mergedFrom = _mergedFrom ??= [];
        mergedFrom.AddRange((t.MergedFrom ?? []).Where(m => !mergedFrom.Contains(m)));

        Tier = entry.Details.TierAfter ?? Tier;
        TierReviewAt = entry.Details.TierAfter is null ? TierReviewAt : entry.Details.TierReviewAt;
        LifetimeEarned += new Points(t.LifetimeEarned);
        LifetimeRedeemed += new Points(t.LifetimeRedeemed);
        LifetimeExpired += new Points(t.LifetimeExpired);
        LifetimeReversed += new Points(t.LifetimeReversed);
        PurchaseCount = checked(PurchaseCount + t.PurchaseCount);
        LastActivityAt = t.LastActivityAt > LastActivityAt ? t.LastActivityAt : LastActivityAt;
        mergedFrom.Add(t.MemberId);
    }

    private void ApplyWarning(EntryDetails? details)
    {
        foreach (LotUse use in details?.Lots ?? [])
        {
            foreach (PointLot lot in Lots)
            {
                if (lot.ExpiresAt == use.ExpiresAt)
                {
                    lot.Warned = true;
                }
            }
        }

        if (details?.InactivityDeadline is { } deadline)
        {
            InactivityWarnedFor = deadline;
        }
    }

    /// <summary>A lot id for an entry without a transaction id.</summary>
    private static string LotIdOf(LedgerEntry entry) => "#" + entry.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Whether expiry <paramref name="a"/> comes after <paramref name="b"/>; null is never.</summary>
    private static bool Later(DateTimeOffset? a, DateTimeOffset? b) => a is null ? b is not null : b is not null && a > b;

    private void RecordProgress(string original, EntryDetails details, long sequence)
    {
        Dictionary<string, ReturnProgress> returns = _returns ??= new(StringComparer.Ordinal);
        if (!returns.TryGetValue(original, out ReturnProgress? progress))
        {
            // Complete only when it is certain no older return was forgotten: a live return is
            // decided on a progress remembered from the ledger first, so this is replay.
            progress = new ReturnProgress { Reversed = new long[details.Components.Count] };
            returns[original] = progress;
            ForgetOldestReturns();
        }

        progress.Touched = sequence;
        progress.Add(details);
    }

    /// <summary>
    /// The return progress of <paramref name="purchase"/>, complete: as kept when it is, else made
    /// from <paramref name="ledgerReturns"/> (every return of it, read from the ledger; none for a
    /// first return) and kept from now on, so that the returns applied after it keep it complete.
    /// Called before a return of it is decided; it adds only what the ledger already holds, so the
    /// state stays the replay of its ledger.
    /// </summary>
    public ReturnProgress RememberReturns(LedgerEntry purchase, IReadOnlyList<LedgerEntry> ledgerReturns)
    {
        string id = purchase.TransactionId!;
        if (_returns?.GetValueOrDefault(id) is { Complete: true } known)
        {
            known.Touched = Sequence;
            return known;
        }

        ReturnProgress progress = ReturnProgress.Of(purchase, ledgerReturns);
        progress.Touched = Sequence;
        (_returns ??= new(StringComparer.Ordinal))[id] = progress;
        ForgetOldestReturns();
        return progress;
    }

    /// <summary>Keeps at most <see cref="ReturnsKept"/> return progresses (a snapshot of an older version may hold more).</summary>
    public void TrimReturns() => ForgetOldestReturns();

    /// <summary>
    /// The progress of <paramref name="purchaseId"/> when it is known to be complete; null when it
    /// has no returns kept or may lack forgotten ones (then ask <see cref="RememberReturns"/>).
    /// </summary>
    public ReturnProgress? KnownReturns(string purchaseId) =>
        _returns?.GetValueOrDefault(purchaseId) is { Complete: true } known ? known : null;

    /// <summary>Forgets the least recently used progress while more than <see cref="ReturnsKept"/> are kept.</summary>
    private void ForgetOldestReturns()
    {
        while (_returns is { Count: > ReturnsKept } returns)
        {
            string oldest = returns.MinBy(r => r.Value.Touched).Key;
            returns.Remove(oldest);
        }
    }

    private void AddPending(PendingLot lot)
    {
        // Lots usually arrive in order of availability; keep the list sorted for Mature.
        List<PendingLot> pending = _pending ??= [];
        int at = pending.Count;
        while (at > 0 && pending[at - 1].AvailableAt > lot.AvailableAt)
        {
            at--;
        }

        pending.Insert(at, lot);
    }

    private void AddQualifying(int day, long points, long spend, bool createMissing = true)
    {
        // Days are kept in order and nearly always arrive as the newest: search from the end.
        int at = Qualification.Count;
        while (at > 0 && Qualification[at - 1].Day > day)
        {
            at--;
        }

        QualifyingDay? bucket = at > 0 && Qualification[at - 1].Day == day ? Qualification[at - 1] : null;
        if (bucket is null)
        {
            if (!createMissing)
            {
                return;
            }

            bucket = new QualifyingDay { Day = day };
            Qualification.Insert(at, bucket);
        }

        bucket.Points = checked(bucket.Points + points);
        bucket.Spend = checked(bucket.Spend + spend);
        int oldest = Qualification[^1].Day - Limits.TierWindowDaysMax - Limits.TierWindowDaysMax;
        int expired = 0;
        while (expired < Qualification.Count && Qualification[expired].Day < oldest)
        {
            expired++;
        }

        Qualification.RemoveRange(0, expired);
    }

    private static void AddCapped(Dictionary<int, long> buckets, int key, long points, int kept, bool createMissing = true)
    {
        if (!buckets.TryGetValue(key, out long value) && !createMissing)
        {
            return;
        }

        buckets[key] = checked(value + points);
        if (buckets.Count > kept)
        {
            int newest = buckets.Keys.Max();
            foreach (int old in buckets.Keys.Where(k => k <= newest - kept).ToList())
            {
                buckets.Remove(old);
            }
        }
    }
}

/// <summary>The points of one purchase while they are pending.</summary>
[GenerateSerializer]
public sealed class PendingLot
{
    /// <summary>The purchase.</summary>
    [Id(0)] public string TransactionId { get; set; } = "";

    /// <summary>When the points become spendable.</summary>
    [Id(1)] public DateTimeOffset AvailableAt { get; set; }

    /// <summary>The points still pending (less any reversed by returns).</summary>
    [Id(2)] public Points Points { get; set; }

    /// <summary>When the points expire once spendable; null when never.</summary>
    [Id(3)] public DateTimeOffset? ExpiresAt { get; set; }
}

/// <summary>Spendable points that share an origin and an expiry.</summary>
[GenerateSerializer]
public sealed class PointLot
{
    /// <summary>Where the points came from: the purchase's transaction id, "#signup", an adjustment's id.</summary>
    [Id(0)] public string Id { get; set; } = "";

    /// <summary>The points left in the lot.</summary>
    [Id(1)] public Points Points { get; set; }

    /// <summary>When they expire; null when never.</summary>
    [Id(2)] public DateTimeOffset? ExpiresAt { get; set; }

    /// <summary>Whether the member was warned that this lot expires soon.</summary>
    [Id(3)] public bool Warned { get; set; }
}

/// <summary>An open reservation at a till.</summary>
[GenerateSerializer]
public sealed class Hold
{
    /// <summary>The reservation id (the Reserve entry's transaction id).</summary>
    [Id(0)] public string ReservationId { get; set; } = "";

    /// <summary>The points held.</summary>
    [Id(1)] public Points Points { get; set; }

    /// <summary>When the hold lapses if neither committed nor cancelled.</summary>
    [Id(2)] public DateTimeOffset LapsesAt { get; set; }

    /// <summary>The reward reserved.</summary>
    [Id(3)] public string RewardId { get; set; } = "";

    /// <summary>How many units.</summary>
    [Id(4)] public int Quantity { get; set; }
}

/// <summary>Qualifying points and spend recorded on one UTC day.</summary>
[GenerateSerializer]
public sealed class QualifyingDay
{
    /// <summary>The day (DateOnly.DayNumber).</summary>
    [Id(0)] public int Day { get; set; }

    /// <summary>Points earned that day, net of returns since.</summary>
    [Id(1)] public long Points { get; set; }

    /// <summary>Money spent that day in minor units, net of returns since.</summary>
    [Id(2)] public long Spend { get; set; }
}
