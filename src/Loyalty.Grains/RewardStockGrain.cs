using Loyalty.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// The units of one reward that members have taken, keyed "program/reward". Stock is shared by
/// every member of the program, so it cannot live in a member grain; redemptions are rare next
/// to purchases, so each change is written straight to grain storage before it answers.
/// </summary>
/// <remarks>
/// A unit is taken before the member decides, under a claim: the member and the transaction id of
/// the ledger entry that will spend it. The ledger, not the member's word, settles every claim:
/// <list type="bullet">
/// <item>no entry of that member under that id, or only one written before the claim was taken (an
/// earlier request's, whose units were counted then): the units go back;</item>
/// <item>a redemption: the units stay taken and the claim is done;</item>
/// <item>a reservation: the claim stays open until the reservation's end entry shows whether it
/// was committed (the units stay taken) or cancelled or lapsed (they go back).</item>
/// </list>
/// The entry also says how many units it spends; a claim that took more (a retry that asked for
/// fewer) gives the rest back. A request that ends known to have written nothing (refused, or a
/// resend answered as a duplicate) abandons its claim, and the units go back once every request
/// that took it has (Abandon); one whose commit's outcome is unknown does not, and leaves its
/// claim to the ledger. The member asks for settling after it ends a reservation (Settle); the grain settles every
/// claim itself a confirm window after its last take, and a reservation's a window after its lapse
/// time, so a crash between a member's entry and its call loses no unit and sells none twice. A
/// claim is owned: a request can only give back units that the ledger says were never spent,
/// never another member's or another request's. A full return gives its units back by the
/// member's call alone (Return): a crash between the return's entry and that call leaves them
/// taken, the safe side.
/// </remarks>
public sealed partial class RewardStockGrain(
    [PersistentState("stock", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<RewardStockState> state,
    ILedgerStore ledger,
    EngineClock clock,
    IOptions<MemberOptions> options,
    ILogger<RewardStockGrain> logger) : Grain, IRewardStockGrain
{
    /// <summary>How often claims are settled against the ledger while the grain is active.</summary>
    private static readonly TimeSpan SettlePeriod = TimeSpan.FromMinutes(1);

    /// <summary>Returned claim ids are remembered this long, so a repeated return gives nothing back twice.</summary>
    private static readonly TimeSpan ReturnedKept = TimeSpan.FromDays(1);

    /// <summary>
    /// How far apart two silos' clocks may be: an entry recorded this much before its claim was
    /// taken may still be the claim's own, and keeps the units (the safe side: never sold twice).
    /// </summary>
    private static readonly TimeSpan ClockSkewMax = TimeSpan.FromMinutes(1);

    private TimeSpan Window => TimeSpan.FromSeconds(Math.Max(MemberOptions.StockClaimConfirmSecondsMin, options.Value.StockClaimConfirmSeconds));

    private string ProgramId => this.GetPrimaryKeyString()[..this.GetPrimaryKeyString().IndexOf('/', StringComparison.Ordinal)];

    /// <inheritdoc />
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // Claims stored before they had owners were keyed by their id alone.
        foreach ((string id, StockClaim legacy) in state.State.Claims.Where(c => c.Value.ClaimId.Length == 0).ToList())
        {
            state.State.Claims.Remove(id);
            legacy.ClaimId = id;
            state.State.Claims[StockClaim.Key(null, id)] = legacy;
        }

        // A stock stored before it kept when it started counting may have counted anything: its
        // returns give units back as they did.
        RewardStockState stored = state.State;
        if (stored.CountingSince is null && (stored.Taken > 0 || stored.Claims.Count > 0 || stored.Returned.Count > 0))
        {
            stored.CountingSince = DateTimeOffset.MinValue;
        }

        this.RegisterGrainTimer(SettleDueAsync, new GrainTimerCreationOptions(SettlePeriod, SettlePeriod));
        try
        {
            await SettleDueAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The ledger or the storage is unavailable: the stock still answers, and the timer settles later.
            LogSettleFailed(logger, e, this.GetPrimaryKeyString());
        }
    }

    /// <inheritdoc />
    public async Task<bool> Take(string memberId, string claimId, int quantity, long stock)
    {
        RewardStockState s = state.State;
        if (s.Claims.TryGetValue(StockClaim.Key(memberId, claimId), out StockClaim? open))
        {
            // A retry may ask for more than the request that took the claim: it takes the difference.
            int more = quantity - open.Quantity;
            if (more > 0 && checked(s.Taken + more) > stock)
            {
                return false;
            }

            s.Taken = checked(s.Taken + Math.Max(0, more));
            open.Quantity = Math.Max(open.Quantity, quantity);
            // A claim stored before holders were counted (0) stays uncounted: its taker may have
            // written its entry, so its abandonment is settled by the ledger, not by the count.
            open.Holders = open.Holders == 0 ? 0 : checked(open.Holders + 1);
            open.JoinedAt = clock.GetUtcNow();
            await WriteOrReloadAsync();
            return true;
        }

        if (quantity < 1 || checked(s.Taken + quantity) > stock)
        {
            return false;
        }

        s.Claims[StockClaim.Key(memberId, claimId)] = new StockClaim { MemberId = memberId, ClaimId = claimId, Quantity = quantity, TakenAt = clock.GetUtcNow(), Holders = 1 };
        s.Taken = checked(s.Taken + quantity);
        s.CountingSince ??= clock.GetUtcNow();
        await WriteOrReloadAsync();
        return true;
    }

    /// <inheritdoc />
    public async Task Abandon(string memberId, string claimId)
    {
        if (!state.State.Claims.TryGetValue(StockClaim.Key(memberId, claimId), out StockClaim? claim))
        {
            return;
        }

        if (claim.Holders > 1)
        {
            claim.Holders--;
        }
        else if (claim.Holders == 1)
        {
            // Every request that took the claim ended having written nothing (one that wrote its
            // entry, or whose commit's outcome is unknown, never abandons): the units go back. Not
            // settled by the ledger: an entry there under this id is older than the claim (a
            // committed reservation resent after the member forgot it), and its units were
            // counted by a claim of its own.
            Release(claim, giveBack: true);
        }
        else
        {
            // A claim stored before its holders were counted: the ledger says.
            await SettleAsync(claim, CancellationToken.None);
        }

        await WriteOrReloadAsync();
    }

    /// <inheritdoc />
    public async Task Settle(string memberId, string claimId)
    {
        if (state.State.Claims.TryGetValue(StockClaim.Key(memberId, claimId), out StockClaim? claim))
        {
            await SettleAsync(claim, CancellationToken.None);
            await WriteOrReloadAsync();
        }
    }

    /// <inheritdoc />
    public async Task Return(string claimId, int quantity, DateTimeOffset spentAt)
    {
        RewardStockState s = state.State;
        if (quantity < 1 || s.Returned.ContainsKey(claimId) || s.CountingSince is not { } since || spentAt < since - ClockSkewMax)
        {
            // Given back already, or spent before the stock counted anything (the reward had no
            // stock then): nothing of it is in Taken.
            return;
        }

        s.Returned[claimId] = clock.GetUtcNow();
        GiveBack(quantity);
        await WriteOrReloadAsync();
    }

    /// <inheritdoc />
    public Task<long> Taken() => Task.FromResult(state.State.Taken);

    /// <summary>Settles the claims that are due: past the confirm window, a reservation's past its lapse time too.</summary>
    private async Task SettleDueAsync(CancellationToken cancellationToken)
    {
        RewardStockState s = state.State;
        DateTimeOffset now = clock.GetUtcNow();
        bool changed = false;
        foreach (StockClaim claim in s.Claims.Values.Where(c => now - c.SettlesFrom >= Window).ToList())
        {
            changed |= await SettleAsync(claim, cancellationToken);
        }

        foreach (string old in s.Returned.Where(r => now - r.Value > ReturnedKept).Select(r => r.Key).ToList())
        {
            s.Returned.Remove(old);
            changed = true;
        }

        if (changed)
        {
            await WriteOrReloadAsync();
        }
    }

    /// <summary>Settles one claim by what the ledger holds (see the remarks on the class); whether anything changed.</summary>
    private async Task<bool> SettleAsync(StockClaim claim, CancellationToken cancellationToken)
    {
        LedgerEntry? entry = await ledger.FindTransactionAsync(ProgramId, claim.ClaimId, cancellationToken);
        if (!Spends(entry, claim))
        {
            return Release(claim, giveBack: true);
        }

        // The entry says how many units it spends; a claim that took more gives the rest back.
        bool changed = KeepOnly(claim, entry!.Details switch { RedeemDetails r => r.Quantity, ReserveDetails h => h.Quantity, _ => claim.Quantity });
        if (entry.Kind != LedgerEntryKind.Reserve)
        {
            return Release(claim, giveBack: false);
        }

        LedgerEntry? end = await ledger.FindTransactionAsync(ProgramId, claim.ClaimId + MemberGrain.EndSuffix, cancellationToken);
        if (end is null || end.MemberId != entry.MemberId)
        {
            DateTimeOffset? until = entry.DetailsAs<ReserveDetails>()?.LapsesAt ?? entry.RecordedAt;
            changed |= claim.HeldUntil != until;
            claim.HeldUntil = until;
            return changed;
        }

        return Release(claim, giveBack: end.Kind == LedgerEntryKind.ReservationEnd);
    }

    /// <summary>Whether <paramref name="entry"/> is the one the claim's units were taken for.</summary>
    private static bool Spends(LedgerEntry? entry, StockClaim claim) =>
        entry is { Kind: LedgerEntryKind.Redeem or LedgerEntryKind.Reserve }
        && (claim.MemberId is null || entry.MemberId == claim.MemberId)
        && entry.RecordedAt >= claim.TakenAt - ClockSkewMax;

    private bool KeepOnly(StockClaim claim, int spent)
    {
        if (spent < 1 || spent >= claim.Quantity)
        {
            return false;
        }

        GiveBack(claim.Quantity - spent);
        claim.Quantity = spent;
        return true;
    }

    private bool Release(StockClaim claim, bool giveBack)
    {
        RewardStockState s = state.State;
        s.Claims.Remove(StockClaim.Key(claim.MemberId, claim.ClaimId));
        if (giveBack)
        {
            GiveBack(claim.Quantity);
        }

        return true;
    }

    /// <summary>
    /// Gives units back. More than are taken cannot be given back: that would be a unit given
    /// back twice (a defect, or a stock stored by a version with one), and the count stays at 0
    /// rather than selling more than the stock; it is logged and counted
    /// (<see cref="GrainMetrics.StockOverReleased"/>) so that it is seen, not hidden.
    /// </summary>
    private void GiveBack(long units)
    {
        RewardStockState s = state.State;
        if (units <= s.Taken)
        {
            s.Taken -= units;
            return;
        }

        // A stock stored before it kept when it started counting may give back units it never
        // counted (see OnActivateAsync): expected there, not a defect.
        if (s.CountingSince != DateTimeOffset.MinValue)
        {
            _overReleased = checked(_overReleased + (units - s.Taken));
        }

        s.Taken = 0;
    }

    /// <summary>Units given back beyond those taken since the last write, reported once that write lands.</summary>
    private long _overReleased;

    [LoggerMessage(Level = LogLevel.Error, Message = "Stock {Reward}: {Units} units given back beyond those taken; the count stays at 0 (a unit given back twice)")]
    private static partial void LogOverReleased(ILogger logger, string reward, long units);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stock {Reward}: settling its claims against the ledger failed; the timer tries again")]
    private static partial void LogSettleFailed(ILogger logger, Exception exception, string reward);

    private async Task WriteOrReloadAsync()
    {
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            // Not durable, so not done: the caller sees the failure, and the stored state is the truth.
            _overReleased = 0;
            await state.ReadStateAsync();
            throw;
        }

        if (_overReleased > 0)
        {
            // Reported once it is written: a failed write is settled again later, and would count it twice.
            GrainMetrics.StockOverReleased.Add(_overReleased, new KeyValuePair<string, object?>("program", ProgramId));
            LogOverReleased(logger, this.GetPrimaryKeyString(), _overReleased);
            _overReleased = 0;
        }
    }
}

/// <summary>The stored state of a reward's stock.</summary>
[GenerateSerializer]
public sealed class RewardStockState
{
    /// <summary>Units taken by redemptions and open reservations.</summary>
    [Id(0)] public long Taken { get; set; }

    /// <summary>Claims not settled yet (see <see cref="StockClaim.Key"/>).</summary>
    [Id(1)] public Dictionary<string, StockClaim> Claims { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Claims whose spent units a full return gave back recently, so a repeated return gives nothing back twice.</summary>
    [Id(3)] public Dictionary<string, DateTimeOffset> Returned { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// When the stock took its first unit: units spent before were never counted, and a return of
    /// them gives none back. Null while it has taken none; the earliest time for a stock stored
    /// before this was kept.
    /// </summary>
    [Id(4)] public DateTimeOffset? CountingSince { get; set; }
}

/// <summary>Units taken under one claim: a member's ledger entry that will spend them.</summary>
[GenerateSerializer]
public sealed class StockClaim
{
    /// <summary>How many units.</summary>
    [Id(0)] public int Quantity { get; set; }

    /// <summary>When they were taken.</summary>
    [Id(1)] public DateTimeOffset TakenAt { get; set; }

    /// <summary>The member (null in claims stored before claims had owners).</summary>
    [Id(2)] public string? MemberId { get; set; }

    /// <summary>The transaction id of the entry that will spend the units.</summary>
    [Id(3)] public string ClaimId { get; set; } = "";

    /// <summary>Requests that took the claim and have not reported how they ended.</summary>
    [Id(4)] public int Holders { get; set; }

    /// <summary>For a reservation found in the ledger: when it lapses, after which the grain settles it itself.</summary>
    [Id(5)] public DateTimeOffset? HeldUntil { get; set; }

    /// <summary>When a request last joined the claim (a retry, a resend).</summary>
    [Id(6)] public DateTimeOffset? JoinedAt { get; set; }

    /// <summary>The confirm window counts from this: the claim's lapse time, or its last take or join.</summary>
    public DateTimeOffset SettlesFrom => HeldUntil ?? (JoinedAt > TakenAt ? JoinedAt.Value : TakenAt);

    /// <summary>The claim's key: member ids cannot hold '#', so the first one ends the member's part.</summary>
    public static string Key(string? memberId, string claimId) => (memberId ?? "") + "#" + claimId;
}
