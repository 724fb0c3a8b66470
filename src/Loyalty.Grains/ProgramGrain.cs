using Loyalty.Storage;
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
    EngineClock clock) : Grain, IProgramGrain
{
    /// <inheritdoc />
    public async Task<ProgramConfig> Put(ProgramSettings settings) =>
        await PutIfVersion(settings, null) switch
        {
            { Config: { } config } => config,
            var refused => throw new ArgumentException(refused.Refused, nameof(settings)),
        };

    /// <inheritdoc />
    public async Task<ProgramPut> PutIfVersion(ProgramSettings settings, long? expectedVersion)
    {
        // The grain is not reentrant: no other change runs between this check and the write.
        long current = state.State.Config?.Version ?? 0;
        if (expectedVersion is { } expected && expected != current)
        {
            return new ProgramPut(null, current);
        }

        string? error = settings.Check();
        if (error is not null)
        {
            throw new ArgumentException(error, nameof(settings));
        }

        if (FollowTiers(settings, state.State.Config, this.GetPrimaryKeyString(), out string? refused) is not { } following)
        {
            return new ProgramPut(null, current, refused);
        }

        settings = following;

        long version = checked(current + 1);
        var config = new ProgramConfig(this.GetPrimaryKeyString(), settings, version);
        // A new expiry policy or birthday rule changes when members are due: each is brought due once.
        bool expiryChanged = version > 1 && (state.State.Config!.Settings.ExpiryRules != settings.ExpiryRules || state.State.Config.Settings.Birthday != settings.Birthday);
        ProgramGrainState before = state.State;
        state.State = new ProgramGrainState { Config = config, RescheduleMembers = before.RescheduleMembers || expiryChanged };
        try
        {
            await state.WriteStateAsync();
        }
        catch
        {
            // Not saved: the grain must keep answering the version that is stored, or a retry under
            // the expected version would be refused as stale.
            state.State = before;
            throw;
        }

        directory.Remember(config);
        if (state.State.RescheduleMembers)
        {
            // Every member wakes once and reschedules itself under the new policy (an inactivity
            // rule added now applies to members who never change again); wakes read the program
            // fresh, so none decides under the old policy. Until this is done the flag stays
            // stored, and the next change of the program does it again.
            await store.ScheduleProgramAsync(config.ProgramId, clock.GetUtcNow(), CancellationToken.None);
            state.State.RescheduleMembers = false;
            await state.WriteStateAsync();
        }

        return new ProgramPut(config, version);
    }

    /// <summary>
    /// The settings as they follow the program's <paramref name="before"/>: their ladder with
    /// every old tier name mapped (see <see cref="TierLadder.Follow"/>); null when refused.
    /// </summary>
    private static ProgramSettings? FollowTiers(ProgramSettings settings, ProgramConfig? before, string programId, out string? refused)
    {
        if (before is null)
        {
            refused = settings.Tiers?.Renamed is { Count: > 0 } ? $"tiers.renamed: program '{programId}' is new; it has no old tier names to map" : null;
            return refused is null ? settings : null;
        }

        // Members keep their tier by name: a ladder that drops a name must say where its members go.
        if (settings.Ladder.Follow(before.Settings.Ladder, out refused) is not { } ladder)
        {
            refused = settings.Tiers is null ? refused + " (a program without tiers has the one tier 'standard': send that ladder to map the names)" : refused;
            return null;
        }

        refused = settings.NamesRenamedTier(ladder);
        return refused is not null ? null
            : settings.Tiers is not null || ladder.Renamed is not null ? settings with { Tiers = ladder }
            : settings;
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

    /// <summary>The expiry policy changed and not every member has been brought due yet.</summary>
    [Id(1)]
    public bool RescheduleMembers { get; set; }
}
