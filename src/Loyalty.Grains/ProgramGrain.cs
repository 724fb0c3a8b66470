using Loyalty.Storage;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// A program's configuration. Changes are rare, so each is written straight to grain storage;
/// member grains read it through the silo's <see cref="ProgramDirectory"/> cache.
/// </summary>
public sealed partial class ProgramGrain(
    [PersistentState("program", StorageSiloBuilderExtensions.SnapshotStorageName)] IPersistentState<ProgramGrainState> state,
    ProgramDirectory directory,
    ILedgerStore store,
    EngineClock clock,
    FaultInjector faults,
    ILogger<ProgramGrain> logger) : Grain, IProgramGrain
{
    /// <summary>How often a scheduling of every member that failed is tried again.</summary>
    internal static readonly TimeSpan RescheduleRetryPeriod = TimeSpan.FromSeconds(5);

    /// <summary>Tries a failed scheduling of every member again until it is done; null while none is owed.</summary>
    private IGrainTimer? _rescheduleRetry;

    /// <inheritdoc />
    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // A scheduling owed when the grain last stopped (its silo died before it was done).
        if (state.State.RescheduleMembers)
        {
            RetryRescheduleLater();
        }

        return Task.CompletedTask;
    }

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
        if (state.State.RescheduleMembers && !await TryRescheduleMembersAsync())
        {
            // The change is stored and answered as made; its scheduling is owed, and tried again.
            RetryRescheduleLater();
        }

        return new ProgramPut(config, version);
    }

    /// <summary>
    /// Brings every member of the program due once: each wakes and reschedules itself under the
    /// new policy (an inactivity rule added now applies to members who never change again). Until
    /// this is done the flag stays stored; false when it failed.
    /// </summary>
    private async Task<bool> TryRescheduleMembersAsync()
    {
        string programId = this.GetPrimaryKeyString();
        try
        {
            faults.AtProgramSchedule(programId);
            await store.ScheduleProgramAsync(programId, clock.GetUtcNow(), CancellationToken.None);
            state.State.RescheduleMembers = false;
            await state.WriteStateAsync();
            _rescheduleRetry?.Dispose();
            _rescheduleRetry = null;
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Stored or not, the flag in memory says it is still owed: a retry does it again (it is idempotent).
            state.State.RescheduleMembers = true;
            LogRescheduleFailed(e, programId, RescheduleRetryPeriod.TotalSeconds);
            return false;
        }
    }

    /// <summary>Tries the owed scheduling again every <see cref="RescheduleRetryPeriod"/>, keeping the grain active until it is done.</summary>
    private void RetryRescheduleLater() =>
        _rescheduleRetry ??= this.RegisterGrainTimer(async _ => await TryRescheduleMembersAsync(),
            new GrainTimerCreationOptions(RescheduleRetryPeriod, RescheduleRetryPeriod) { KeepAlive = true });

    [LoggerMessage(Level = LogLevel.Warning, Message = "Scheduling every member of program {ProgramId} after a change of its expiry or birthday rules failed; trying again in {RetrySeconds} s")]
    private partial void LogRescheduleFailed(Exception exception, string programId, double retrySeconds);

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
