namespace Loyalty.Grains;

/// <summary>
/// The clock the loyalty rules read (pending periods, tier reviews, campaign windows). It is
/// its own service, not the container's TimeProvider, so tests can move the rules' time
/// forward by days without moving the Orleans runtime's timers with it.
/// </summary>
public sealed class EngineClock(TimeProvider time)
{
    /// <summary>The system clock.</summary>
    public static readonly EngineClock System = new(TimeProvider.System);

    /// <summary>The underlying time provider.</summary>
    public TimeProvider Time { get; } = time;

    /// <summary>
    /// Now, in UTC, truncated to whole microseconds: the ledger's precision. Every time the rules
    /// derive from it (recorded_at, available_at, tier reviews) then reads back from the ledger
    /// exactly as it was used, so a replayed member equals the live one to the tick.
    /// </summary>
    public DateTimeOffset GetUtcNow()
    {
        DateTimeOffset now = Time.GetUtcNow().ToUniversalTime();
        return now.AddTicks(-(now.UtcTicks % TimeSpan.TicksPerMicrosecond));
    }
}
