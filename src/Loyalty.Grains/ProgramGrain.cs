using Loyalty.Storage;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// A program's configuration. Changes are rare, so each is written straight to grain storage;
/// member grains read it through the silo's <see cref="ProgramDirectory"/> cache.
/// </summary>
public sealed class ProgramGrain(
    [PersistentState("program", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<ProgramGrainState> state,
    ProgramDirectory directory,
    ILedgerStore store,
    EngineClock clock,
    IOptions<MemberOptions> members) : Grain, IProgramGrain
{
    /// <inheritdoc />
    public async Task<ProgramConfig> Put(ProgramSettings settings)
    {
        string? error = settings.Check();
        if (error is not null)
        {
            throw new ArgumentException(error, nameof(settings));
        }

        long version = checked((state.State.Config?.Version ?? 0) + 1);
        var config = new ProgramConfig(this.GetPrimaryKeyString(), settings, version);
        if (version > 1 && state.State.Config!.Settings.Expiry != settings.Expiry)
        {
            // Every member wakes once and reschedules itself under the new policy (an inactivity
            // rule added now applies to members who never change again). The wake waits out the
            // other silos' program caches, so none decides under the old policy; it is queued
            // before the change is stored, so a failure after it leaves only a harmless wake.
            await store.ScheduleProgramAsync(config.ProgramId, clock.GetUtcNow().AddMilliseconds(2L * members.Value.ProgramCacheTtlMs + 1_000), CancellationToken.None);
        }

        state.State = new ProgramGrainState { Config = config };
        await state.WriteStateAsync();
        directory.Remember(config);
        return config;
    }

    /// <inheritdoc />
    public Task<ProgramConfig?> Get() => Task.FromResult(state.State.Config);
}

/// <summary>The stored state of a program grain.</summary>
[GenerateSerializer]
public sealed class ProgramGrainState
{
    /// <summary>The configuration, or null before the program is created.</summary>
    [Id(0)]
    public ProgramConfig? Config { get; set; }
}
