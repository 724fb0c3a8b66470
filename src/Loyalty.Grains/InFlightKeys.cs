namespace Loyalty.Grains;

/// <summary>
/// The keys of a member's changes that wait for their commit, by 64-bit hash: how many under each
/// hash (two keys may share one) and, only once a resend has to wait, their waiters. A member
/// nearly always has one key in flight or none: that one is held inline, so the common path
/// allocates nothing and stores no reference; more keys go to a dictionary made on demand.
/// </summary>
internal struct InFlightKeys
{
    private long _hash;
    private int _count;
    private TaskCompletionSource? _waiters;
    private Dictionary<long, (int Count, TaskCompletionSource? Waiters)>? _more;

    /// <summary>A change under this hash now waits for its commit.</summary>
    public void Add(long hash)
    {
        if (_count > 0 && _hash == hash)
        {
            _count++;
        }
        else if (_count == 0 && _more?.ContainsKey(hash) != true)
        {
            (_hash, _count) = (hash, 1);
        }
        else
        {
            _more ??= [];
            _more[hash] = _more.TryGetValue(hash, out var pending) ? (pending.Count + 1, pending.Waiters) : (1, null);
        }
    }

    /// <summary>A change under this hash has settled; its waiters go once the last such change has.</summary>
    public void Remove(long hash)
    {
        if (_count > 0 && _hash == hash)
        {
            if (--_count == 0)
            {
                TaskCompletionSource? waiters = _waiters;
                _waiters = null;
                waiters?.SetResult();
            }

            return;
        }

        (int count, TaskCompletionSource? more) = _more![hash];
        if (count > 1)
        {
            _more[hash] = (count - 1, more);
        }
        else
        {
            _more.Remove(hash);
            more?.SetResult();
        }
    }

    /// <summary>A task that completes when the changes under this hash have settled; null when none waits.</summary>
    public Task? WaitFor(long hash)
    {
        if (_count > 0 && _hash == hash)
        {
            return (_waiters ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        if (_more is null || !_more.TryGetValue(hash, out var pending))
        {
            return null;
        }

        if (pending.Waiters is null)
        {
            pending.Waiters = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _more[hash] = pending;
        }

        return pending.Waiters.Task;
    }
}
