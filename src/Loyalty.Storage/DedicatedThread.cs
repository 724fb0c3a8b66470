namespace Loyalty.Storage;

/// <summary>
/// Work that runs on a thread of its own: serial work whose waits (a commit, a checkpoint, both
/// synchronous on SQLite) would otherwise hold a pool thread for their whole length.
/// </summary>
internal static class DedicatedThread
{
    /// <summary>Starts <paramref name="work"/> on a background thread; the task ends with it, carrying its exception if it threw.</summary>
    public static Task Start(string name, Action work)
    {
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                work();
                stopped.SetResult();
            }
            catch (Exception e)
            {
                stopped.SetException(e);
            }
        })
        {
            IsBackground = true,
            Name = name,
        };
        thread.Start();
        return stopped.Task;
    }
}
