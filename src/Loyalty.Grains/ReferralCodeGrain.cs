using Loyalty.Storage;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// One referral code of one program, keyed "program/code" (<see cref="ReferralCodes.Key"/>), so a
/// code typed at sign-up finds its member in one call. A code is written once, when its member
/// first asks for it. Codes were once global, keyed by the code alone: such a code's owner in this
/// program is taken over at the first use of the code here (and one of another program is none of
/// this program's business: the code is free here).
/// </summary>
public sealed class ReferralCodeGrain(
    [PersistentState("code", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<ReferralCodeState> state) : Grain, IReferralCodeGrain
{
    /// <summary>Whether this activation looked for the code's owner of before codes were kept per program.</summary>
    private bool _globalRead;

    /// <inheritdoc />
    public async Task<bool> Claim(ReferralOwner owner)
    {
        if (await OwnerAsync() is { } current)
        {
            return current == owner;
        }

        await WriteOwnerAsync(owner);
        return true;
    }

    /// <inheritdoc />
    public Task<ReferralOwner?> Resolve() => OwnerAsync();

    /// <inheritdoc />
    public async Task Release(ReferralOwner owner)
    {
        if (await OwnerAsync() == owner)
        {
            await state.ClearStateAsync();
            state.State.Owner = null;
        }

        // A global key of the code, of before codes were kept per program, would give it back.
        if (Scope() is { } scope && scope.ProgramId == owner.ProgramId)
        {
            await GrainFactory.GetGrain<IReferralCodeGrain>(scope.Code).Release(owner);
        }
    }

    /// <summary>The code's owner: the stored one, or its global key's owner in this program, taken over.</summary>
    private async Task<ReferralOwner?> OwnerAsync()
    {
        if (state.State.Owner is { } owner || _globalRead || Scope() is not { } scope)
        {
            return state.State.Owner;
        }

        ReferralOwner? global = await GrainFactory.GetGrain<IReferralCodeGrain>(scope.Code).Resolve();
        if (global is not null && global.ProgramId == scope.ProgramId)
        {
            // Noted as read only once written: a write that fails leaves the takeover to the next
            // call, so that the code is never taken as free (and claimed by another member) meanwhile.
            await WriteOwnerAsync(global);
        }

        _globalRead = true;
        return state.State.Owner;
    }

    /// <summary>Program and code of a key "program/code"; null for a global key (the code alone).</summary>
    private (string ProgramId, string Code)? Scope()
    {
        string key = this.GetPrimaryKeyString();
        int slash = key.LastIndexOf('/');
        return slash < 0 ? null : (key[..slash], key[(slash + 1)..]);
    }

    private async Task WriteOwnerAsync(ReferralOwner owner)
    {
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
    }
}

/// <summary>The stored state of a referral code.</summary>
[GenerateSerializer]
public sealed class ReferralCodeState
{
    /// <summary>The member the code belongs to; null before it is issued.</summary>
    [Id(0)] public ReferralOwner? Owner { get; set; }
}
