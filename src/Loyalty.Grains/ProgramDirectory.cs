using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Loyalty.Grains;

/// <summary>
/// A silo-wide cache of program configurations, so that a purchase does not cost a call to the
/// program grain. An entry is trusted for <see cref="MemberOptions.ProgramCacheTtlMs"/>; a change
/// made on this silo is seen at once, a change made on another silo within that time.
/// Unknown programs are not cached, so a program created a moment ago is found.
/// </summary>
public sealed class ProgramDirectory(IGrainFactory grains, TimeProvider clock, IOptions<MemberOptions> options)
{
    private readonly ConcurrentDictionary<string, (ProgramConfig Config, long FetchedAt)> _cache = new(StringComparer.Ordinal);
    private readonly TimeSpan _ttl = TimeSpan.FromMilliseconds(options.Value.ProgramCacheTtlMs);

    /// <summary>The program's configuration, or null when it does not exist.</summary>
    public ValueTask<ProgramConfig?> GetAsync(string programId)
    {
        if (_cache.TryGetValue(programId, out var cached) && clock.GetElapsedTime(cached.FetchedAt) < _ttl)
        {
            return ValueTask.FromResult<ProgramConfig?>(cached.Config);
        }

        return FetchAsync(programId);
    }

    /// <summary>The program's configuration from the program grain itself, bypassing the cache (for rare decisions that must see the newest).</summary>
    public ValueTask<ProgramConfig?> GetFreshAsync(string programId) => FetchAsync(programId);

    /// <summary>
    /// The program's configuration as <see cref="GetAsync"/> gives it, read fresh when its ladder
    /// does not know <paramref name="tier"/> (a member's tier, or one a merge brings): a name written
    /// under a newer configuration, a tier renamed moments ago on another silo. Read as it is, the
    /// old copy would take the member for the entry tier. A name the newest configuration does not
    /// know either (dropped before old names were kept) costs a fresh read each time.
    /// </summary>
    public async ValueTask<ProgramConfig?> GetKnowingAsync(string programId, string? tier)
    {
        ProgramConfig? config = await GetAsync(programId);
        return config is not null && tier is not null && !config.Settings.Ladder.Knows(tier) ? await FetchAsync(programId) : config;
    }

    /// <summary>Records a configuration this silo has just written.</summary>
    public void Remember(ProgramConfig config) =>
        _cache.AddOrUpdate(config.ProgramId, (config, clock.GetTimestamp()), (_, old) =>
            old.Config.Version > config.Version ? old : (config, clock.GetTimestamp()));

    /// <summary>
    /// For tests: this silo's copy becomes <paramref name="config"/>, whatever its version, as if
    /// it had been fetched just before another silo wrote a newer one.
    /// </summary>
    internal void Hold(ProgramConfig config) => _cache[config.ProgramId] = (config, clock.GetTimestamp());

    private async ValueTask<ProgramConfig?> FetchAsync(string programId)
    {
        ProgramConfig? config = await grains.GetGrain<IProgramGrain>(programId).Get();
        if (config is not null)
        {
            Remember(config);
        }

        return config;
    }
}
