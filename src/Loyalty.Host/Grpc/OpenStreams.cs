namespace Loyalty.Host.Grpc;

/// <summary>
/// The node's open purchase streams, so that a stopping node can end them cleanly: once
/// <see cref="End"/> is called, every stream stops reading, writes the acknowledgements of what it
/// already took, and ends with UNAVAILABLE (the till reconnects to another node and resends what
/// was not acknowledged); new streams are refused with UNAVAILABLE.
/// </summary>
public sealed class OpenStreams : IDisposable
{
    /// <summary>How often <see cref="WaitClosedAsync"/> looks at the count (a stop, not a hot path).</summary>
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    private readonly CancellationTokenSource _end = new();
    private int _open;

    /// <summary>The message a stream ended (or refused) by a stopping node carries.</summary>
    public const string StoppingMessage =
        "the node is stopping; every purchase this stream took was answered: open a stream to another node and resend what was not acknowledged";

    /// <summary>Cancelled when streams must end.</summary>
    public CancellationToken Ending => _end.Token;

    /// <summary>Whether streams must end (the node is stopping).</summary>
    public bool Ended => _end.IsCancellationRequested;

    /// <summary>Streams open now.</summary>
    public int Count => Volatile.Read(ref _open);

    /// <summary>Counts a stream as open until the lease is disposed.</summary>
    public Lease Open()
    {
        Interlocked.Increment(ref _open);
        return new Lease(this);
    }

    /// <summary>Tells every open stream to end, and refuses new ones.</summary>
    public void End() => _end.Cancel();

    /// <summary>Waits until no stream is open, or <paramref name="timeout"/> has passed; true when none is.</summary>
    /// <remarks>Real time, not the engine's clock: a stop takes real seconds even when tests fake the rules' clock.</remarks>
    public async Task<bool> WaitClosedAsync(TimeSpan timeout, CancellationToken cancel)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        while (Count > 0 && System.Diagnostics.Stopwatch.GetElapsedTime(started) < timeout && !cancel.IsCancellationRequested)
        {
            await Task.Delay(PollInterval, CancellationToken.None);
        }

        return Count == 0;
    }

    /// <inheritdoc />
    public void Dispose() => _end.Dispose();

    /// <summary>One open stream.</summary>
    public readonly struct Lease(OpenStreams streams) : IDisposable
    {
        /// <inheritdoc />
        public void Dispose() => Interlocked.Decrement(ref streams._open);
    }
}
