namespace Loyalty;

/// <summary>
/// At most <see cref="LinesPerSecond"/> log lines a second for a kind of event that clients can
/// cause at will (bad input, reused ids): a flood of them stays visible in the log and cannot
/// fill the disk. What is left out in a second is counted, and the next line written says how many.
/// </summary>
/// <param name="linesPerSecond">Lines a second at most.</param>
/// <param name="clock">The clock the seconds are counted on.</param>
public sealed class LogBudget(int linesPerSecond, TimeProvider clock)
{
    private readonly Lock _lock = new();
    private long _windowStartedAt = long.MinValue;
    private int _linesInWindow;
    private long _leftOut;
    private long _asked;

    /// <summary>Lines a second at most.</summary>
    public int LinesPerSecond { get; } = linesPerSecond;

    /// <summary>Lines asked for since start, written or left out.</summary>
    public long Asked => Interlocked.Read(ref _asked);

    /// <summary>
    /// Takes a line from this second's budget: true with how many lines were left out since the
    /// last line written, or false (counted as left out) when this second's lines are used up.
    /// </summary>
    public bool TryTake(out long leftOut)
    {
        Interlocked.Increment(ref _asked);
        lock (_lock)
        {
            long now = clock.GetTimestamp();
            if (_windowStartedAt == long.MinValue || clock.GetElapsedTime(_windowStartedAt, now) >= TimeSpan.FromSeconds(1))
            {
                _windowStartedAt = now;
                _linesInWindow = 0;
            }

            if (_linesInWindow >= LinesPerSecond)
            {
                _leftOut++;
                leftOut = 0;
                return false;
            }

            _linesInWindow++;
            leftOut = _leftOut;
            _leftOut = 0;
            return true;
        }
    }
}
