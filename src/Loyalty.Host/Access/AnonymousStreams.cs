namespace Loyalty.Host.Access;

/// <summary>
/// The node's streams that need no key (health watches from load balancers and orchestrators).
/// They hold no key's allowance of streams, so a node-wide bound keeps a flood of them from
/// holding memory and a thread's attention for as long as their callers keep them open.
/// </summary>
public sealed class AnonymousStreams
{
    /// <summary>Anonymous streams open at once on one node; beyond it a new one is refused with RESOURCE_EXHAUSTED.</summary>
    public const int OpenMax = 64;

    private int _open;

    /// <summary>Counts a stream opened, unless <see cref="OpenMax"/> are open.</summary>
    public bool TryOpen()
    {
        if (Interlocked.Increment(ref _open) <= OpenMax)
        {
            return true;
        }

        Interlocked.Decrement(ref _open);
        return false;
    }

    /// <summary>Counts a stream closed.</summary>
    public void Close() => Interlocked.Decrement(ref _open);
}
