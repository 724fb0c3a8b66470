using Loyalty.Storage;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// The units of one reward that members have taken, keyed "program/reward". Stock is shared by
/// every member of the program, so it cannot live in a member grain; redemptions are rare next
/// to purchases, so each change is written straight to grain storage before it answers.
/// </summary>
public sealed class RewardStockGrain(
    [PersistentState("stock", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<RewardStockState> state) : Grain, IRewardStockGrain
{
    /// <inheritdoc />
    public async Task<bool> Take(int quantity, long stock)
    {
        if (quantity < 1 || checked(state.State.Taken + quantity) > stock)
        {
            return false;
        }

        long before = state.State.Taken;
        state.State.Taken = checked(before + quantity);
        await WriteOrUndoAsync(before);
        return true;
    }

    /// <inheritdoc />
    public async Task Give(int quantity)
    {
        if (quantity < 1)
        {
            return;
        }

        long before = state.State.Taken;
        state.State.Taken = Math.Max(0, before - quantity);
        await WriteOrUndoAsync(before);
    }

    /// <inheritdoc />
    public Task<long> Taken() => Task.FromResult(state.State.Taken);

    private async Task WriteOrUndoAsync(long before)
    {
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            // Not durable, so not done: the caller sees the failure and nothing changed.
            state.State.Taken = before;
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
}
