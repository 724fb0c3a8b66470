using System.Runtime.InteropServices;

namespace Loyalty.Grains;

/// <summary>
/// A member's points by where they stand: the spendable balance and its lots (one per expiry),
/// the points of purchases still pending for their return window, and the points held by open
/// reservations. Lots are value types in lists the book owns, so a purchase changes numbers in
/// place instead of allocating objects that live as long as the member (each one a reference the
/// garbage collector would have to trace). Changed only through <see cref="MemberState.Apply"/>.
/// </summary>
[GenerateSerializer]
public sealed class LotBook
{
    [Id(0)] private Points _balance;
    [Id(1)] private List<PointLot>? _spendable;
    [Id(2)] private List<PendingLot>? _pending;
    [Id(3)] private List<Hold>? _holds;
    [Id(4)] private DateTimeOffset _maturedThrough;

    /// <summary>
    /// The latest instant the pending lots were matured to: by a change, a view, or replay (each
    /// entry's recorded time). The member's time never goes back before it (see
    /// <c>MemberGrain.MemberNow</c>), so every entry is recorded at or after every maturing its
    /// state went through, and replay matures the same lots before it. Internal: a view matures
    /// the live state without an entry, so live and replayed members may differ here alone.
    /// </summary>
    internal DateTimeOffset MaturedThrough => _maturedThrough;

    /// <summary>Spendable (active) points. Negative only under the allow-negative policy.</summary>
    public Points Balance => _balance;

    /// <summary>
    /// The spendable points by lot, soonest expiry first (lots that never expire last). Their sum
    /// is the balance when it is positive; a negative balance has no lots, and later credit pays
    /// the debt before it makes a lot.
    /// </summary>
    public IReadOnlyList<PointLot> Spendable => (IReadOnlyList<PointLot>?)_spendable ?? [];

    /// <summary>Earned points not yet spendable, one lot per purchase, in order of availability.</summary>
    public IReadOnlyList<PendingLot> Pending => (IReadOnlyList<PendingLot>?)_pending ?? [];

    /// <summary>Open reservations: points held at a till until committed, cancelled or lapsed.</summary>
    public IReadOnlyList<Hold> Holds => (IReadOnlyList<Hold>?)_holds ?? [];

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

    /// <summary>
    /// The points a spend decided at <paramref name="now"/> may take: those in lots that have not
    /// expired, less every open hold (the balance is positive). Points past their expiry whose
    /// entry is not written yet (the member's wake comes a moment later) are never spendable, and
    /// a hold is met from unexpired points first, so points that reach a lot after it expired (a
    /// return, a merge) give nothing to spend.
    /// </summary>
    public long SpendableAt(DateTimeOffset now) => Math.Max(0, checked(PointsOutliving(now) - HeldAt(now).Value));

    /// <summary>
    /// What expires at <paramref name="now"/>: the points in lots past their expiry, soonest first,
    /// except what open holds need of them because the unexpired points no longer cover them (a
    /// hold made before a lot expired may be met from it: held points do not expire under a till's
    /// feet). Those kept are the latest to have expired, which the most holds may use.
    /// </summary>
    public List<LotUse> ExpiringAt(DateTimeOffset now)
    {
        var expiring = new List<LotUse>();
        TakeExpired(expiring, checked(ExpiredPoints(now) - Math.Max(0, HeldAt(now).Value - PointsOutliving(now))), now);
        return expiring;
    }

    /// <summary>
    /// Whether any lot, spendable or pending, carries an expiry. Lots keep the expiry they were
    /// given when the programme's policy changes (or arrive with one, by a merge or a return), so
    /// a member whose programme no longer expires points may still have some to expire.
    /// </summary>
    public bool AnyExpires()
    {
        if (Spendable.Count > 0 && Spendable[0].ExpiresAt is not null)
        {
            return true;
        }

        IReadOnlyList<PendingLot> pending = Pending;
        for (int i = 0; i < pending.Count; i++)
        {
            if (pending[i].ExpiresAt is not null)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The soonest expiry at which some points will expire (see <see cref="ExpiringAt"/>) with the
    /// holds open now; null when none will. Lots expire soonest first, so that is the first lot's
    /// expiry as long as the lots hold more than the holds; a hold that ends changes the member,
    /// which asks again.
    /// </summary>
    public DateTimeOffset? NextExpiry() =>
        // Lots exist only while the balance is positive, and then hold all of it.
        Spendable.Count > 0 && Spendable[0].ExpiresAt is { } first && Balance.Value > HeldAt(DateTimeOffset.MinValue).Value
            ? first
            : null;

    /// <summary>
    /// Which lots a hold's commit at <paramref name="now"/> spends: unexpired points first, soonest
    /// to expire first; then, for what they no longer cover, points past their expiry that the hold
    /// may use (lots that expired after it was made), latest first. May cover less than the hold.
    /// </summary>
    public List<LotUse> PlanCommit(Hold hold, DateTimeOffset now)
    {
        List<LotUse> plan = PlanDebit(hold.Points.Value, unexpiredAt: now);
        long left = checked(hold.Points.Value - plan.Sum(l => l.Points));
        IReadOnlyList<PointLot> lots = Spendable;
        for (int i = lots.Count - 1; i >= 0 && left > 0; i--)
        {
            if (lots[i].ExpiresAt is { } at && at <= now && at > hold.MadeAt)
            {
                long take = Math.Min(left, lots[i].Points.Value);
                plan.Add(new LotUse(lots[i].Id, take, at));
                left -= take;
            }
        }

        return plan;
    }

    /// <summary>
    /// Which lots a debit that does not ask for spendable points takes (a support adjustment, a
    /// return's or a referral reversal's take-back): unexpired points first, as
    /// <see cref="PlanDebit"/> orders them, then points past their expiry whose entry is not written
    /// yet. Taking expired points first would cost the member nothing and leave it the good ones.
    /// </summary>
    public List<LotUse> PlanTakeBack(long points, DateTimeOffset now, bool prefer = false, DateTimeOffset? preferredExpiry = null)
    {
        List<LotUse> plan = PlanDebit(points, prefer, preferredExpiry, unexpiredAt: now);
        TakeExpired(plan, checked(points - plan.Sum(l => l.Points)), now);
        return plan;
    }

    /// <summary>Adds to <paramref name="plan"/> up to <paramref name="points"/> from lots past their expiry at <paramref name="now"/>, soonest first.</summary>
    private void TakeExpired(List<LotUse> plan, long points, DateTimeOffset now)
    {
        long left = points;
        IReadOnlyList<PointLot> lots = Spendable;
        for (int i = 0; i < lots.Count && left > 0 && lots[i].ExpiresAt is { } at && at <= now; i++)
        {
            long take = Math.Min(left, lots[i].Points.Value);
            plan.Add(new LotUse(lots[i].Id, take, at));
            left -= take;
        }
    }

    /// <summary>Whether no points are pending and every spendable lot is past its expiry at <paramref name="at"/> (or there is none).</summary>
    public bool HoldsNothingLiveAt(DateTimeOffset at)
    {
        IReadOnlyList<PointLot> lots = Spendable;
        return Pending.Count == 0 && (lots.Count == 0 || lots[^1].ExpiresAt <= at);
    }

    /// <summary>Points in lots past their expiry at <paramref name="now"/>.</summary>
    private long ExpiredPoints(DateTimeOffset now)
    {
        long points = 0;
        IReadOnlyList<PointLot> lots = Spendable;
        for (int i = 0; i < lots.Count && lots[i].ExpiresAt is { } at && at <= now; i++)
        {
            points = checked(points + lots[i].Points.Value);
        }

        return points;
    }

    /// <summary>Points in lots that do not expire by <paramref name="at"/>.</summary>
    private long PointsOutliving(DateTimeOffset at)
    {
        long points = 0;
        IReadOnlyList<PointLot> lots = Spendable;
        for (int i = 0; i < lots.Count; i++)
        {
            if (!(lots[i].ExpiresAt <= at))
            {
                points = checked(points + lots[i].Points.Value);
            }
        }

        return points;
    }

    /// <summary>Points held by reservations that have not lapsed by <paramref name="now"/>.</summary>
    public Points HeldAt(DateTimeOffset now)
    {
        // By index: this runs after every change of a member with expiry (no enumerator to allocate).
        Points held = Points.Zero;
        IReadOnlyList<Hold> holds = Holds;
        for (int i = 0; i < holds.Count; i++)
        {
            if (holds[i].LapsesAt > now)
            {
                held += holds[i].Points;
            }
        }

        return held;
    }

    /// <summary>The open reservation with this id, or null.</summary>
    public Hold? FindHold(string reservationId) => _holds?.Find(h => h.ReservationId == reservationId);

    /// <summary>
    /// The pending lot of the points that become spendable at <paramref name="availableAt"/> and
    /// expire at <paramref name="expiresAt"/> (a purchase's, with every other purchase's of its
    /// day), or null once they are spendable (or all reversed).
    /// </summary>
    public PendingLot? FindPending(DateTimeOffset availableAt, DateTimeOffset? expiresAt)
    {
        int at = IndexOfPending(availableAt, expiresAt);
        return at < 0 ? null : _pending![at];
    }

    /// <summary>Moves every pending lot available by <paramref name="now"/> into the balance.</summary>
    public void Mature(DateTimeOffset now)
    {
        if (now > _maturedThrough)
        {
            _maturedThrough = now;
        }

        if (_pending is not { Count: > 0 } pending)
        {
            return;
        }

        int matured = 0;
        while (matured < pending.Count && pending[matured].AvailableAt <= now)
        {
            PendingLot lot = pending[matured];
            Credit(lot.Points, lot.Key, lot.ExpiresAt);
            matured++;
        }

        if (matured > 0)
        {
            pending.RemoveRange(0, matured);
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
        // The id is encoded only for a new lot: most credits add to the lot of their expiry.
        if (CreditExisting(points, expiresAt) is { } newLot)
        {
            _spendable!.Insert(newLot.At, new PointLot(LotId.From(lotId), newLot.Points, expiresAt, Warned: false));
        }
    }

    /// <inheritdoc cref="Credit(Points, string, DateTimeOffset?)"/>
    public void Credit(Points points, LotId lotId, DateTimeOffset? expiresAt)
    {
        if (CreditExisting(points, expiresAt) is { } newLot)
        {
            _spendable!.Insert(newLot.At, new PointLot(lotId, newLot.Points, expiresAt, Warned: false));
        }
    }

    /// <summary>
    /// Credits a merged duplicate's lot (<see cref="Credit(Points, string, DateTimeOffset?)"/>),
    /// keeping it warned about when the duplicate was warned of it (<paramref name="warned"/>) and,
    /// if this member had a lot of that expiry already, it was warned of that one too: one person
    /// is not told twice of the same points, and is told of points no warning named.
    /// </summary>
    public void CreditMerged(Points points, string lotId, DateTimeOffset? expiresAt, bool warned)
    {
        int mine = IndexOfExpiry(expiresAt);
        bool warnedOfMine = mine < 0 || _spendable![mine].Warned;
        Credit(points, lotId, expiresAt);
        if (warned && warnedOfMine && IndexOfExpiry(expiresAt) is >= 0 and int at)
        {
            ref PointLot lot = ref CollectionsMarshal.AsSpan(_spendable)[at];
            lot = lot with { Warned = true };
        }
    }

    /// <summary>The expiries of the lots the member was warned about, as a merge hands them on; null when none.</summary>
    public IReadOnlyList<DateTimeOffset>? WarnedExpiries()
    {
        List<DateTimeOffset>? warned = null;
        foreach (PointLot lot in Spendable)
        {
            if (lot is { Warned: true, ExpiresAt: { } expiry })
            {
                (warned ??= []).Add(expiry);
            }
        }

        return warned;
    }

    /// <summary>Credits the balance and the lot of the expiry if there is one; else where a new lot goes, and its points.</summary>
    private (int At, Points Points)? CreditExisting(Points points, DateTimeOffset? expiresAt)
    {
        long debt = _balance.Value < 0 ? -_balance.Value : 0;
        long toLot = points.Value - Math.Min(points.Value, debt);
        _balance += points;
        if (toLot <= 0)
        {
            return null;
        }

        List<PointLot> lots = _spendable ??= [];
        // Soonest expiry first, never-expiring last; new points usually expire last, so search from the end.
        int at = lots.Count;
        while (at > 0 && Later(lots[at - 1].ExpiresAt, expiresAt))
        {
            at--;
        }

        if (at > 0 && lots[at - 1].ExpiresAt == expiresAt)
        {
            // Points that join a lot the member was warned about are not in that warning: the lot
            // is warned about again, with its new total.
            ref PointLot same = ref CollectionsMarshal.AsSpan(lots)[at - 1];
            same = same with { Points = same.Points + new Points(toLot), Warned = false };
            return null;
        }

        return (at, new Points(toLot));
    }

    /// <summary>
    /// Which lots <paramref name="points"/> would come from: when <paramref name="prefer"/> is
    /// set, the lot expiring at <paramref name="preferredExpiry"/> first (a return takes back its
    /// own purchase's points, so other points keep their dates), then the soonest to expire. Given
    /// <paramref name="unexpiredAt"/> (a redemption), lots already past their expiry then are not
    /// used. The plan may cover less than asked when the lots run out.
    /// </summary>
    public List<LotUse> PlanDebit(long points, bool prefer = false, DateTimeOffset? preferredExpiry = null, DateTimeOffset? unexpiredAt = null)
    {
        var plan = new List<LotUse>();
        IReadOnlyList<PointLot> lots = Spendable;
        long left = points;
        int own = prefer ? IndexOfExpiry(preferredExpiry) : -1;
        if (own >= 0 && !(lots[own].ExpiresAt <= unexpiredAt))
        {
            left -= Take(plan, lots[own], left);
        }

        for (int i = 0; i < lots.Count && left > 0; i++)
        {
            if (i != own && !(lots[i].ExpiresAt <= unexpiredAt))
            {
                left -= Take(plan, lots[i], left);
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
            int at = IndexOfExpiry(use.ExpiresAt);
            while ((at < 0 || _spendable![at].Points.Value < use.Points) && IndexOfPendingExpiring(use.ExpiresAt) is >= 0 and int pendingAt)
            {
                // The entry was decided on a clock ahead of the one that recorded it (another silo's,
                // or before a step back): it spent points that were spendable then. The entry is the
                // proof, so pending lots of that expiry mature now, as few as it needs, soonest
                // first; otherwise a rebuild from the ledger could never pass here.
                Mature(_pending![pendingAt].AvailableAt);
                at = IndexOfExpiry(use.ExpiresAt);
            }

            if (at < 0)
            {
                throw new InvalidOperationException($"No lot expiring {use.ExpiresAt:O} ({use.LotId}) is held by the member.");
            }

            ref PointLot lot = ref CollectionsMarshal.AsSpan(_spendable)[at];
            lot = lot with { Points = lot.Points - new Points(use.Points) };
            if (lot.Points.Value <= 0)
            {
                // Less than the plan takes is legitimate in one case: decided on a clock ahead, a
                // pending lot that matured early paid off a debt that, replayed on the recording
                // clock, an earlier credit paid from this lot. The lot then ends empty and the rest
                // stays debt, which that pending lot pays when it matures, as it did live. The
                // lots still hold the balance (checked after every live change and every load).
                _spendable!.RemoveAt(at);
            }
        }

        _balance -= points;
    }

    /// <summary>The first pending lot (soonest available) that expires at <paramref name="expiresAt"/>, or -1.</summary>
    private int IndexOfPendingExpiring(DateTimeOffset? expiresAt)
    {
        for (int i = 0; i < (_pending?.Count ?? 0); i++)
        {
            if (_pending![i].ExpiresAt == expiresAt)
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Marks the lots of <paramref name="uses"/> (by expiry) as warned about.</summary>
    public void Warn(IReadOnlyList<LotUse> uses)
    {
        Span<PointLot> lots = CollectionsMarshal.AsSpan(_spendable);
        foreach (LotUse use in uses)
        {
            for (int i = 0; i < lots.Length; i++)
            {
                if (lots[i].ExpiresAt == use.ExpiresAt)
                {
                    lots[i] = lots[i] with { Warned = true };
                }
            }
        }
    }

    /// <summary>
    /// Adds a purchase's pending points to the lot of the same availability and expiry (named by
    /// the first purchase that made it), or a new lot, keeping the lots in order of availability.
    /// Purchases' points become spendable as a local day begins (<see cref="ProgramSettings.PendingUntil"/>),
    /// so a member holds at most one lot per day of the pending period (per expiry policy in force
    /// that day), however many purchases it makes.
    /// </summary>
    public void AddPending(PendingLot lot)
    {
        if (IndexOfPending(lot.AvailableAt, lot.ExpiresAt) is >= 0 and int same)
        {
            ref PendingLot joined = ref CollectionsMarshal.AsSpan(_pending)[same];
            joined = joined with { Points = joined.Points + lot.Points };
            return;
        }

        // Lots usually arrive in order of availability; keep the list sorted for Mature.
        List<PendingLot> pending = _pending ??= [];
        int at = pending.Count;
        while (at > 0 && pending[at - 1].AvailableAt > lot.AvailableAt)
        {
            at--;
        }

        pending.Insert(at, lot);
    }

    /// <summary>
    /// Takes <paramref name="points"/> back from the pending lot named <paramref name="lotKey"/> (its
    /// first purchase's transaction id), if it is still pending; an emptied lot goes. A return
    /// recorded before lots were shared names its purchase; should that lot have joined another of
    /// the same instant on a rebuild, it is found by <paramref name="availableAt"/>.
    /// </summary>
    public void ReversePending(string lotKey, DateTimeOffset? availableAt, long points)
    {
        int at = points <= 0 ? -1
            : IndexOfPending(lotKey) is >= 0 and int named ? named
            : availableAt is { } available ? IndexOfPending(available, null, anyExpiry: true)
            : -1;
        if (at < 0)
        {
            return;
        }

        ref PendingLot lot = ref CollectionsMarshal.AsSpan(_pending)[at];
        lot = lot with { Points = lot.Points - new Points(points) };
        if (lot.Points.Value <= 0)
        {
            _pending!.RemoveAt(at);
        }
    }

    /// <summary>Opens a reservation's hold.</summary>
    public void AddHold(Hold hold) => (_holds ??= []).Add(hold);

    /// <summary>Ends a reservation's hold (committed, cancelled or lapsed); nothing when it is not open.</summary>
    public void EndHold(string? reservationId)
    {
        if (reservationId is not null)
        {
            _holds?.RemoveAll(h => h.ReservationId == reservationId);
        }
    }

    /// <summary>Empties the book: the member was merged away and its points left with it.</summary>
    public void Clear()
    {
        _balance = Points.Zero;
        _spendable = null;
        _pending = null;
        _holds = null;
    }

    /// <summary>Room for the next spendable lot, made now (see <see cref="MemberState.Prepare"/>).</summary>
    public void Prepare()
    {
        List<PointLot> lots = _spendable ??= new(SpareLots);
        lots.EnsureCapacity(lots.Count + 1);
    }

    /// <summary>Room made for lots beyond the one a purchase may open (each lot carries its id inline, see <see cref="LotId"/>).</summary>
    private const int SpareLots = 1;

    /// <summary>
    /// Throws unless the lots hold exactly the positive balance, each non-empty and soonest expiry
    /// first, and the pending lots are in order of availability.
    /// </summary>
    public void AssertInvariants(long sequence)
    {
        IReadOnlyList<PointLot> lots = Spendable;
        long inLots = 0;
        for (int i = 0; i < lots.Count; i++)
        {
            inLots += lots[i].Points.Value;
            if (lots[i].Points.Value <= 0 || (i > 0 && Later(lots[i - 1].ExpiresAt, lots[i].ExpiresAt)))
            {
                throw new InvalidOperationException($"After entry {sequence}: lot {i} is empty or out of expiry order.");
            }
        }

        for (int i = 0; i < Pending.Count; i++)
        {
            if ((i > 0 && Pending[i - 1].AvailableAt > Pending[i].AvailableAt) || Pending[i].Points.Value <= 0)
            {
                throw new InvalidOperationException($"After entry {sequence}: pending lots are out of order or empty.");
            }
        }

        if (inLots != Math.Max(0, _balance.Value))
        {
            throw new InvalidOperationException($"After entry {sequence}: lots hold {inLots} for a balance of {_balance.Value}.");
        }
    }

    /// <summary>Whether expiry <paramref name="a"/> comes after <paramref name="b"/>; null is never.</summary>
    private static bool Later(DateTimeOffset? a, DateTimeOffset? b) => a is null ? b is not null : b is not null && a > b;

    private int IndexOfExpiry(DateTimeOffset? expiresAt)
    {
        IReadOnlyList<PointLot> lots = Spendable;
        for (int i = 0; i < lots.Count; i++)
        {
            if (lots[i].ExpiresAt == expiresAt)
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>The pending lot spendable at <paramref name="availableAt"/> that expires at <paramref name="expiresAt"/> (at any expiry with <paramref name="anyExpiry"/>), or -1.</summary>
    private int IndexOfPending(DateTimeOffset availableAt, DateTimeOffset? expiresAt, bool anyExpiry = false)
    {
        // From the end: a purchase's lot is almost always the newest (today's).
        IReadOnlyList<PendingLot> pending = Pending;
        for (int i = pending.Count - 1; i >= 0; i--)
        {
            if (pending[i].AvailableAt == availableAt && (anyExpiry || pending[i].ExpiresAt == expiresAt))
            {
                return i;
            }
        }

        return -1;
    }

    private int IndexOfPending(string transactionId)
    {
        IReadOnlyList<PendingLot> pending = Pending;
        for (int i = 0; i < pending.Count; i++)
        {
            if (pending[i].Key.Is(transactionId))
            {
                return i;
            }
        }

        return -1;
    }
}

/// <summary>Spendable points that share an expiry.</summary>
/// <param name="Key">Where the points came from: the first contributing purchase's transaction id, "#signup", an adjustment's id (see <see cref="Id"/>).</param>
/// <param name="Points">The points left in the lot.</param>
/// <param name="ExpiresAt">When they expire; null when never.</param>
/// <param name="Warned">Whether the member was warned that this lot expires soon.</param>
/// <remarks>The id was a string at field 0 before snapshot format 7; such snapshots are rebuilt from the ledger.</remarks>
[GenerateSerializer, Immutable]
public readonly record struct PointLot(
    [property: Id(4)] LotId Key,
    [property: Id(1)] Points Points,
    [property: Id(2)] DateTimeOffset? ExpiresAt,
    [property: Id(3)] bool Warned)
{
    /// <summary>A lot of <paramref name="id"/>.</summary>
    public PointLot(string id, Points points, DateTimeOffset? expiresAt, bool warned)
        : this(LotId.From(id), points, expiresAt, warned)
    {
    }

    /// <summary>The lot's id as text (made when asked: the lot keeps it inline, see <see cref="LotId"/>).</summary>
    public string Id => Key.ToString();
}

/// <summary>
/// Pending points that become spendable together, with the same expiry: one day's purchases
/// (one purchase's, for purchases recorded before points became spendable as a local day begins).
/// </summary>
/// <param name="Key">The first purchase's transaction id (see <see cref="TransactionId"/>).</param>
/// <param name="AvailableAt">When the points become spendable.</param>
/// <param name="Points">The points still pending (less any reversed by returns).</param>
/// <param name="ExpiresAt">When the points expire once spendable; null when never.</param>
/// <remarks>The id was a string at field 0 before snapshot format 7; such snapshots are rebuilt from the ledger.</remarks>
[GenerateSerializer, Immutable]
public readonly record struct PendingLot(
    [property: Id(4)] LotId Key,
    [property: Id(1)] DateTimeOffset AvailableAt,
    [property: Id(2)] Points Points,
    [property: Id(3)] DateTimeOffset? ExpiresAt)
{
    /// <summary>The pending points of purchase <paramref name="transactionId"/>.</summary>
    public PendingLot(string transactionId, DateTimeOffset availableAt, Points points, DateTimeOffset? expiresAt)
        : this(LotId.From(transactionId), availableAt, points, expiresAt)
    {
    }

    /// <summary>The purchase (made as text when asked, see <see cref="LotId"/>).</summary>
    public string TransactionId => Key.ToString();
}

/// <summary>An open reservation at a till.</summary>
/// <param name="ReservationId">The reservation id (the Reserve entry's transaction id).</param>
/// <param name="Points">The points held.</param>
/// <param name="LapsesAt">When the hold lapses if neither committed nor cancelled.</param>
/// <param name="RewardId">The reward reserved.</param>
/// <param name="Quantity">How many units.</param>
/// <param name="MadeAt">
/// When it was made (its entry's recorded time): when unexpired points no longer cover the open
/// holds, it may be met from points of lots that expired after then (see <see cref="LotBook.PlanCommit"/>).
/// </param>
/// <param name="StoreId">The store it was made at; null when none was named (or it was made before stores were kept).</param>
/// <param name="Value">
/// The money the reserved units stood for when it was made, which its commit records; null in
/// reservations made before it was kept (their commit values them by the catalogue of then).
/// </param>
[GenerateSerializer, Immutable]
public sealed record Hold(
    [property: Id(0)] string ReservationId,
    [property: Id(1)] Points Points,
    [property: Id(2)] DateTimeOffset LapsesAt,
    [property: Id(3)] string RewardId,
    [property: Id(4)] int Quantity,
    [property: Id(5)] DateTimeOffset MadeAt,
    [property: Id(6)] string? StoreId = null,
    [property: Id(7)] RewardValue? Value = null);

/// <summary>What redeemed units stand for: the discount, product value or donation, in the program's currency, and a donation's cause.</summary>
/// <param name="AmountMinor">The money, in minor units of <paramref name="Currency"/>.</param>
/// <param name="Currency">The program's currency when the units were valued.</param>
/// <param name="Cause">A donation's cause; null for other rewards.</param>
[GenerateSerializer, Immutable]
public sealed record RewardValue(
    [property: Id(0)] long AmountMinor,
    [property: Id(1)] string? Currency,
    [property: Id(2)] string? Cause);
