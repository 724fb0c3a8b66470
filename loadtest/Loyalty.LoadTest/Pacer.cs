using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Loyalty.LoadTest;

/// <summary>
/// Wakes rate-mode senders at their purchases' send times. <see cref="Task.Delay(TimeSpan)"/> is
/// too coarse for that on Linux: four senders paced at 500/s each woke 1.1 ms late at the median,
/// 5.4 ms at p99 and 7 ms at p99.9 on the development machine with nothing else running, and an
/// open-loop benchmark counts that lateness as the engine's latency. This pacer keeps the waits in
/// one queue and sleeps a dedicated thread with the kernel's fine-grained sleep until the earliest
/// is due (on the same machine: 0.1 ms late at the median, 0.25 ms at p99). A waiter's
/// continuation runs on the pacer's thread, so that a send starts without a hop through the thread
/// pool; senders must therefore not block after a wait (they send and await again).
/// </summary>
internal sealed class Pacer : IDisposable
{
    /// <summary>The longest sleep between looks at the queue, which bounds how late a wait added in the meantime (earlier than the one slept for) can be.</summary>
    private static readonly long SleepSliceTicks = Stopwatch.Frequency / 1_000;

    /// <summary>How long the thread waits on an empty queue before it looks again (a new wait wakes it at once).</summary>
    private static readonly TimeSpan IdleWait = TimeSpan.FromMilliseconds(100);

    /// <summary>The waits by due time; also the lock, and the monitor an idle thread waits on.</summary>
    private readonly PriorityQueue<Waiter, long> _due = new();
    private readonly Thread _thread;
    private bool _stopping;

    public Pacer()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "load test pacer" };
        _thread.Start();
    }

    /// <summary>Completes at <paramref name="timestamp"/> (<see cref="Stopwatch"/> ticks), at once if that has passed.</summary>
    public Task WaitUntilAsync(long timestamp, CancellationToken cancel = default)
    {
        if (timestamp <= Stopwatch.GetTimestamp())
        {
            return Task.CompletedTask;
        }

        cancel.ThrowIfCancellationRequested();
        // Continuations run synchronously on the pacer's thread when it completes the wait (see the class comment).
        var done = new TaskCompletionSource();
        CancellationTokenRegistration registration = cancel.CanBeCanceled
            ? cancel.Register(static d => ((TaskCompletionSource)d!).TrySetCanceled(), done)
            : default;
        lock (_due)
        {
            if (_stopping)
            {
                registration.Dispose();
                throw new ObjectDisposedException(nameof(Pacer));
            }

            _due.Enqueue(new Waiter(done, registration), timestamp);
            Monitor.Pulse(_due);
        }

        return done.Task;
    }

    /// <summary>Stops the thread; waits not yet due are cancelled. Safe from a continuation running on the pacer's own thread.</summary>
    public void Dispose()
    {
        lock (_due)
        {
            _stopping = true;
            Monitor.Pulse(_due);
        }

        if (Thread.CurrentThread != _thread)
        {
            _thread.Join();
        }
    }

    private void Run()
    {
        while (true)
        {
            Waiter next;
            long dueAt;
            lock (_due)
            {
                if (_stopping)
                {
                    break;
                }

                if (!_due.TryPeek(out next, out dueAt))
                {
                    Monitor.Wait(_due, IdleWait);
                    continue;
                }

                if (dueAt <= Stopwatch.GetTimestamp())
                {
                    _due.Dequeue();
                }
            }

            long now = Stopwatch.GetTimestamp();
            if (dueAt > now)
            {
                SleepTicks(Math.Min(dueAt - now, SleepSliceTicks));
                continue;
            }

            // Outside the lock: the continuation may add the sender's next wait. Unregister, not
            // Dispose: Dispose would wait for a cancellation callback running on another thread.
            next.Registration.Unregister();
            next.Done.TrySetResult();
        }

        List<Waiter> left = [];
        lock (_due)
        {
            while (_due.TryDequeue(out Waiter waiter, out _))
            {
                left.Add(waiter);
            }
        }

        foreach (Waiter waiter in left)
        {
            waiter.Registration.Unregister();
            waiter.Done.TrySetCanceled();
        }
    }

    private static void SleepTicks(long ticks)
    {
        long nanos = ticks * 1_000_000_000 / Stopwatch.Frequency;
        if (OperatingSystem.IsLinux())
        {
            var span = new TimeSpec { Seconds = nanos / 1_000_000_000, Nanoseconds = nanos % 1_000_000_000 };
            _ = ClockNanosleep(ClockMonotonic, 0, ref span, IntPtr.Zero);
        }
        else
        {
            // Elsewhere the runtime's millisecond sleep: coarser, and the report's pacing figures show it.
            Thread.Sleep(TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, nanos / 100)));
        }
    }

    private readonly record struct Waiter(TaskCompletionSource Done, CancellationTokenRegistration Registration);

    private const int ClockMonotonic = 1;

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "clock_nanosleep")]
    private static extern int ClockNanosleep(int clock, int flags, ref TimeSpec request, IntPtr remaining);
}
