using Loyalty.Storage;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// The units of one reward that members have taken, keyed "program/reward". Stock is shared by
/// every member of the program, so it cannot live in a member grain; redemptions are rare next
/// to purchases, so each change is written straight to grain storage before it answers.
/// A unit is taken under a claim: the transaction id of the ledger entry that spends it. A claim
/// whose entry never reaches the ledger (the member's silo died in between, or the commit failed)
/// is found by the ledger check that settles every claim after a while, and its unit goes back:
/// stock is never oversold, and a crash does not lose units either.
/// </summary>
public sealed class RewardStockGrain(
    [PersistentState("stock", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<RewardStockState> state,
    ILedgerStore ledger,
    EngineClock clock,
    IOptions<MemberOptions> options) : Grain, IRewardStockGrain
{
    /// <summary>How often claims are settled against the ledger while the grain is active.</summary>
    private static readonly TimeSpan SettlePeriod = TimeSpan.FromMinutes(1);

    /// <summary>Released claim ids are remembered this long, so a repeated release gives nothing back twice.</summary>
    private static readonly TimeSpan ReleasedKept = TimeSpan.FromDays(1);

    /// <inheritdoc />
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        this.RegisterGrainTimer(SettleClaimsAsync, new GrainTimerCreationOptions(SettlePeriod, SettlePeriod));
        await SettleClaimsAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> Take(string claimId, int quantity, long stock)
    {
        RewardStockState s = state.State;
        if (s.Claims.ContainsKey(claimId))
        {
            return true;
        }

        if (quantity < 1 || checked(s.Taken + quantity) > stock)
        {
            return false;
        }

        s.Claims[claimId] = new StockClaim { Quantity = quantity, TakenAt = clock.GetUtcNow() };
        s.Taken = checked(s.Taken + quantity);
        await WriteOrReloadAsync();
        return true;
    }

    /// <inheritdoc />
    public async Task Give(string claimId, int quantity)
    {
        RewardStockState s = state.State;
        if (quantity < 1 || s.Released.ContainsKey(claimId))
        {
            return;
        }

        s.Claims.Remove(claimId);
        s.Released[claimId] = clock.GetUtcNow();
        s.Taken = Math.Max(0, s.Taken - quantity);
        await WriteOrReloadAsync();
    }

    /// <inheritdoc />
    public Task<long> Taken() => Task.FromResult(state.State.Taken);

    /// <summary>
    /// Settles claims older than the confirm window: one whose entry is in the ledger keeps its
    /// unit, one whose entry is not gives it back.
    /// </summary>
    private async Task SettleClaimsAsync(CancellationToken cancellationToken)
    {
        RewardStockState s = state.State;
        DateTimeOffset now = clock.GetUtcNow();
        TimeSpan window = TimeSpan.FromSeconds(Math.Max(1, options.Value.StockClaimConfirmSeconds));
        string programId = this.GetPrimaryKeyString()[..this.GetPrimaryKeyString().IndexOf('/', StringComparison.Ordinal)];
        bool changed = false;
        foreach ((string claimId, StockClaim claim) in s.Claims.Where(c => now - c.Value.TakenAt >= window).ToList())
        {
            if (await ledger.FindTransactionAsync(programId, claimId, cancellationToken) is null)
            {
                s.Taken = Math.Max(0, s.Taken - claim.Quantity);
                s.Released[claimId] = now;
            }

            s.Claims.Remove(claimId);
            changed = true;
        }

        foreach (string old in s.Released.Where(r => now - r.Value > ReleasedKept).Select(r => r.Key).ToList())
        {
            s.Released.Remove(old);
            changed = true;
        }

        if (changed)
        {
            await WriteOrReloadAsync();
        }
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

    /// <summary>Units taken whose ledger entry has not been checked yet, by claim (transaction) id.</summary>
    [Id(1)] public Dictionary<string, StockClaim> Claims { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Claims given back recently, so a repeated release gives nothing back twice.</summary>
    [Id(2)] public Dictionary<string, DateTimeOffset> Released { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>Units taken under one claim, and when.</summary>
[GenerateSerializer]
public sealed class StockClaim
{
    /// <summary>How many units.</summary>
    [Id(0)] public int Quantity { get; set; }

    /// <summary>When they were taken.</summary>
    [Id(1)] public DateTimeOffset TakenAt { get; set; }
}
