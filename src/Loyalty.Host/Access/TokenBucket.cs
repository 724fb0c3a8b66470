namespace Loyalty.Host.Access;

/// <summary>
/// A token bucket: <see cref="Burst"/> tokens at most, refilled at <see cref="PerSecond"/>. Each
/// allowed call takes one. Time is the caller's monotonic timestamp (<see cref="TimeProvider.GetTimestamp"/>),
/// so the bucket allocates nothing and tests can drive it.
/// </summary>
public sealed class TokenBucket
{
    private readonly Lock _lock = new();
    private readonly long _timestampFrequency;
    private double _tokens;
    private long _updatedAt;

    /// <summary>A full bucket.</summary>
    public TokenBucket(double perSecond, double burst, long now, long timestampFrequency)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(perSecond);
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        PerSecond = perSecond;
        Burst = burst;
        _tokens = burst;
        _updatedAt = now;
        _timestampFrequency = timestampFrequency;
    }

    /// <summary>Tokens added per second.</summary>
    public double PerSecond { get; }

    /// <summary>Most tokens held.</summary>
    public double Burst { get; }

    /// <summary>A wait as the whole milliseconds a client is told (at least 1: "now" would invite a busy loop).</summary>
    public static long WholeMilliseconds(TimeSpan retryAfter) => Math.Max(1, (long)Math.Ceiling(retryAfter.TotalMilliseconds));

    /// <summary>Takes a token; when there is none, false and how long until there will be one.</summary>
    public bool TryTake(long now, out TimeSpan retryAfter)
    {
        lock (_lock)
        {
            if (now > _updatedAt)
            {
                double elapsedSeconds = (now - _updatedAt) / (double)_timestampFrequency;
                _tokens = Math.Min(Burst, _tokens + (elapsedSeconds * PerSecond));
                _updatedAt = now;
            }

            if (_tokens >= 1)
            {
                _tokens -= 1;
                retryAfter = TimeSpan.Zero;
                return true;
            }

            retryAfter = TimeSpan.FromSeconds((1 - _tokens) / PerSecond);
            return false;
        }
    }
}
