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
    /// <summary>How long after a failed scheduling of every member it is tried again; doubled after each failure, up to <see cref="RescheduleRetryMax"/>.</summary>
    internal static readonly TimeSpan RescheduleRetryFirst = TimeSpan.FromSeconds(5), RescheduleRetryMax = TimeSpan.FromMinutes(5);

    /// <summary>Tries a failed scheduling of every member again until it is done; null while none is owed.</summary>
    private IGrainTimer? _rescheduleRetry;

    private TimeSpan _rescheduleRetryDelay = RescheduleRetryFirst;

    /// <summary>The members were brought due, and only the stored flag's clearing is still owed (it failed): a retry writes just that.</summary>
    private bool _membersScheduled;

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
        if (state.State.Config?.Settings is { } was && settings.Expiry is { } expiry)
        {
            settings = settings with { Expiry = expiry.Following(was.Expiry, clock.GetUtcNow()) };
        }

        if (await CurrencyChangeRefusedAsync(state.State.Config?.Settings, settings) is { } currencyRefused)
        {
            return new ProgramPut(null, current, currencyRefused);
        }

        long version = checked(current + 1);
        var config = new ProgramConfig(this.GetPrimaryKeyString(), settings, version);
        // A new expiry policy, birthday rule or tier ladder changes when members are due: each is brought due once.
        bool dueChanged = version > 1 && DueChanged(state.State.Config!.Settings, settings);
        ProgramGrainState before = state.State;
        state.State = new ProgramGrainState { Config = config, RescheduleMembers = before.RescheduleMembers || dueChanged };
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
        _membersScheduled &= !dueChanged;
        if (state.State.RescheduleMembers && !await TryRescheduleMembersAsync())
        {
            // The change is stored and answered as made; its scheduling is owed, and tried again.
            RetryRescheduleLater();
        }

        return new ProgramPut(config, version);
    }

    /// <summary>
    /// Why the currency (or its exponent) may not change, or null: once the program has ledger
    /// entries, its purchases, returns, store-credit wallets and report totals are amounts in the
    /// old currency's minor units, which the new one would read as its own.
    /// </summary>
    private async Task<string?> CurrencyChangeRefusedAsync(ProgramSettings? before, ProgramSettings after) =>
        before is not null && (before.Currency != after.Currency || before.CurrencyExponent != after.CurrencyExponent)
            && await store.HasEntriesAsync(this.GetPrimaryKeyString(), CancellationToken.None)
            ? $"currency cannot change from {before.Currency} (exponent {before.CurrencyExponent}) to {after.Currency} (exponent {after.CurrencyExponent}) once the program has ledger entries: its purchases, returns, wallets and reports are amounts in {before.Currency}; start a new program for the new currency"
            : null;

    /// <summary>
    /// Whether a change of settings moves when members are due: the expiry policy, the birthday
    /// rule (or, with one, the time zone whose midnight begins a birth month), or the tier ladder's
    /// timing (window, grace, basis, thresholds), by which reviews fall.
    /// </summary>
    internal static bool DueChanged(ProgramSettings before, ProgramSettings after)
    {
        TierLadder was = before.Ladder, now = after.Ladder;
        return before.ExpiryRules != after.ExpiryRules || before.Birthday != after.Birthday
            || (after.Birthday is not null && before.TimeZone != after.TimeZone)
            || was.WindowDays != now.WindowDays || was.GraceDays != now.GraceDays || was.Basis != now.Basis
            || !was.Tiers.Select(t => t.Threshold).SequenceEqual(now.Tiers.Select(t => t.Threshold));
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
            if (!_membersScheduled)
            {
                faults.AtProgramSchedule(programId);
                await store.ScheduleProgramAsync(programId, clock.GetUtcNow(), CancellationToken.None);
                _membersScheduled = true;
            }

            state.State.RescheduleMembers = false;
            await state.WriteStateAsync();
            _membersScheduled = false;
            StopRescheduleRetry();
            return true;
        }
        catch (Orleans.Storage.InconsistentStateException e)
        {
            // Another activation wrote the program since this one read it: this copy is stale and
            // goes; the next activation reads what is stored (and its flag, if still owed).
            state.State.RescheduleMembers = true;
            LogRescheduleFailed(e, programId, 0);
            StopRescheduleRetry();
            this.DeactivateOnIdle();
            return false;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Stored or not, the flag in memory says it is still owed: a retry does it again (it is idempotent).
            state.State.RescheduleMembers = true;
            LogRescheduleFailed(e, programId, _rescheduleRetryDelay.TotalSeconds);
            return false;
        }
    }

    /// <summary>
    /// Tries the owed scheduling again, later after each failure (from <see cref="RescheduleRetryFirst"/>
    /// to <see cref="RescheduleRetryMax"/>), keeping the grain active until it is done.
    /// </summary>
    private void RetryRescheduleLater()
    {
        if (_rescheduleRetry is null)
        {
            _rescheduleRetry = this.RegisterGrainTimer(RetryRescheduleAsync, new GrainTimerCreationOptions(_rescheduleRetryDelay, Timeout.InfiniteTimeSpan) { KeepAlive = true });
        }
    }

    private async Task RetryRescheduleAsync(CancellationToken cancellationToken)
    {
        if (!await TryRescheduleMembersAsync() && _rescheduleRetry is { } timer)
        {
            _rescheduleRetryDelay = TimeSpan.FromTicks(Math.Min(_rescheduleRetryDelay.Ticks * 2, RescheduleRetryMax.Ticks));
            timer.Change(_rescheduleRetryDelay, Timeout.InfiniteTimeSpan);
        }
    }

    private void StopRescheduleRetry()
    {
        _rescheduleRetry?.Dispose();
        _rescheduleRetry = null;
        _rescheduleRetryDelay = RescheduleRetryFirst;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Scheduling every member of program {ProgramId} after a change of its expiry, birthday or tier rules failed; trying again in {RetrySeconds} s (0: when the program is next activated)")]
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
