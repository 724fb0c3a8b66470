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

    /// <summary>Now, in UTC.</summary>
    public DateTimeOffset GetUtcNow() => Time.GetUtcNow();
}
