using Loyalty.Storage;
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
/// The member asks for that settling at once when its request ends without an entry (Abandon) or
/// after it ends a reservation (Settle); the grain settles every claim itself after a confirm
/// window, and a reservation's after its lapse time, so a crash between a member's entry and its
/// call loses no unit and sells none twice. A claim is owned: a request can only give back units
/// that the ledger says were never spent, never another member's or another request's.
/// </remarks>
public sealed class RewardStockGrain(
    [PersistentState("stock", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<RewardStockState> state,
    ILedgerStore ledger,
    EngineClock clock,
    IOptions<MemberOptions> options) : Grain, IRewardStockGrain
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

    private TimeSpan Window => TimeSpan.FromSeconds(Math.Max(1, options.Value.StockClaimConfirmSeconds));

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

        this.RegisterGrainTimer(SettleDueAsync, new GrainTimerCreationOptions(SettlePeriod, SettlePeriod));
        await SettleDueAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> Take(string memberId, string claimId, int quantity, long stock)
    {
        RewardStockState s = state.State;
        if (s.Claims.TryGetValue(StockClaim.Key(memberId, claimId), out StockClaim? open))
        {
            open.Holders = checked(open.Holders + 1);
            await WriteOrReloadAsync();
            return true;
        }

        if (quantity < 1 || checked(s.Taken + quantity) > stock)
        {
            return false;
        }

        s.Claims[StockClaim.Key(memberId, claimId)] = new StockClaim { MemberId = memberId, ClaimId = claimId, Quantity = quantity, TakenAt = clock.GetUtcNow(), Holders = 1 };
        s.Taken = checked(s.Taken + quantity);
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

        claim.Holders = Math.Max(0, claim.Holders - 1);
        if (claim.Holders == 0)
        {
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
    public async Task Return(string claimId, int quantity)
    {
        RewardStockState s = state.State;
        if (quantity < 1 || s.Returned.ContainsKey(claimId))
        {
            return;
        }

        s.Returned[claimId] = clock.GetUtcNow();
        s.Taken = Math.Max(0, s.Taken - quantity);
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
        foreach (StockClaim claim in s.Claims.Values.Where(c => now - (c.HeldUntil ?? c.TakenAt) >= Window).ToList())
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

        if (entry!.Kind != LedgerEntryKind.Reserve)
        {
            return Release(claim, giveBack: false);
        }

        LedgerEntry? end = await ledger.FindTransactionAsync(ProgramId, claim.ClaimId + MemberGrain.EndSuffix, cancellationToken);
        if (end is null || end.MemberId != entry.MemberId)
        {
            DateTimeOffset? until = entry.DetailsAs<ReserveDetails>()?.LapsesAt ?? entry.RecordedAt;
            bool changed = claim.HeldUntil != until;
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

    private bool Release(StockClaim claim, bool giveBack)
    {
        RewardStockState s = state.State;
        s.Claims.Remove(StockClaim.Key(claim.MemberId, claim.ClaimId));
        if (giveBack)
        {
            s.Taken = Math.Max(0, s.Taken - claim.Quantity);
        }

        return true;
    }

    private async Task WriteOrReloadAsync()
    {
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            // Not durable, so not done: the caller sees the failure, and the stored state is the truth.
            await state.ReadStateAsync();
            throw;
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

    /// <summary>The claim's key: member ids cannot hold '#', so the first one ends the member's part.</summary>
    public static string Key(string? memberId, string claimId) => (memberId ?? "") + "#" + claimId;
}
