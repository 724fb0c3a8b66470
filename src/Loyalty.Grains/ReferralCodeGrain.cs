using Loyalty.Storage;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// One referral code, keyed by the code itself, so a code typed at sign-up finds its member in
/// one call. Codes are global: a code of another program is recognised as such and refused.
/// A code is written once, when its member first asks for it.
/// </summary>
public sealed class ReferralCodeGrain(
    [PersistentState("code", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<ReferralCodeState> state) : Grain, IReferralCodeGrain
{
    /// <inheritdoc />
    public async Task<bool> Claim(ReferralOwner owner)
    {
        if (state.State.Owner is { } current)
        {
            return current == owner;
        }

        state.State.Owner = owner;
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            state.State.Owner = null;
            throw;
        }

        return true;
    }

    /// <inheritdoc />
    public Task<ReferralOwner?> Resolve() => Task.FromResult(state.State.Owner);

    /// <inheritdoc />
    public async Task Release(ReferralOwner owner)
    {
        if (state.State.Owner == owner)
        {
            await state.ClearStateAsync();
            state.State.Owner = null;
        }
    }
}

/// <summary>The stored state of a referral code.</summary>
[GenerateSerializer]
public sealed class ReferralCodeState
{
    /// <summary>The member the code belongs to; null before it is issued.</summary>
    [Id(0)] public ReferralOwner? Owner { get; set; }
}
