namespace Loyalty.Storage;

/// <summary>
/// Tells readers of the event order that this engine has just committed entries, so that they
/// read at once instead of at their next poll. It carries no data: readers always read the
/// ledger, which is what makes them gap-free; a missed signal only delays them to their poll.
/// </summary>
public sealed class LedgerCommits
{
    private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Wakes every waiter (called by the writer after each committed batch).</summary>
    public void Signal() => Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    /// <summary>A task that completes at the next <see cref="Signal"/>.</summary>
    public Task Next => Volatile.Read(ref _next).Task;
}
