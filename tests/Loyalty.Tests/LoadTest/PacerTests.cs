using System.Diagnostics;
using Loyalty.LoadTest;

namespace Loyalty.Tests.LoadTest;

/// <summary>
/// The load tester's pacer, which wakes rate-mode senders at their send times. Only its order and
/// its never-early promise are asserted; how late it wakes is a benchmark figure (the report's
/// <c>pacing_late_ms</c>), not a unit test's.
/// </summary>
public sealed class PacerTests
{
    /// <summary>A bound on a test that would otherwise hang; not a timing assertion.</summary>
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Wait_NeverCompletesBeforeItsTime()
    {
        using var pacer = new Pacer();
        var random = new Random(7);
        long start = Stopwatch.GetTimestamp();
        long[] due = [.. Enumerable.Range(0, 300).Select(_ => start + (long)(random.NextDouble() * 0.05 * Stopwatch.Frequency))];
        long[] woke = new long[due.Length];

        await Task.WhenAll(due.Select(async (d, i) =>
        {
            await pacer.WaitUntilAsync(d);
            woke[i] = Stopwatch.GetTimestamp();
        })).WaitAsync(HangGuard);

        Assert.All(Enumerable.Range(0, due.Length), i => Assert.True(woke[i] >= due[i], $"wait {i} woke {due[i] - woke[i]} ticks early"));
    }

    [Fact]
    public async Task Waits_CompleteInTheOrderOfTheirTimes_NotOfTheirCalls()
    {
        using var pacer = new Pacer();
        long ms = Stopwatch.Frequency / 1000;
        // Every wait is made well before the first is due (a wait for a time passed completes at
        // once, in the order of the calls): half a second is far more than a busy machine takes
        // between six calls; 10 to 60 ms after it came too close (a CI run made the calls late).
        long first = Stopwatch.GetTimestamp() + 500 * ms;
        var order = new List<int>();
        int[] offsetsMs = [60, 20, 40, 10, 50, 30];

        await Task.WhenAll(offsetsMs.Select(async offset =>
        {
            await pacer.WaitUntilAsync(first + offset * ms);
            lock (order)
            {
                order.Add(offset);
            }
        })).WaitAsync(HangGuard);

        Assert.Equal([10, 20, 30, 40, 50, 60], order);
    }

    [Fact]
    public async Task Continuation_RunsOnThePacersThread_WithoutAHopThroughThePool()
    {
        using var pacer = new Pacer();

        string? thread = await Task.Run(async () =>
        {
            // 200 ms ahead: a wait asked for after its time (a busy machine, other tests beside it)
            // is complete at once and continues where it was asked, which is not what is tested.
            await pacer.WaitUntilAsync(Stopwatch.GetTimestamp() + Stopwatch.Frequency / 5);
            return Thread.CurrentThread.Name;
        }).WaitAsync(HangGuard);

        Assert.Equal("load test pacer", thread);
    }

    [Fact]
    public void Wait_ForATimePassed_IsAlreadyComplete()
    {
        using var pacer = new Pacer();

        Task wait = pacer.WaitUntilAsync(Stopwatch.GetTimestamp() - 1);

        Assert.True(wait.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Cancelling_EndsAWaitNotYetDue_AndTheOthersStillComplete()
    {
        using var pacer = new Pacer();
        using var cancel = new CancellationTokenSource();
        long now = Stopwatch.GetTimestamp();
        Task cancelled = pacer.WaitUntilAsync(now + 60 * Stopwatch.Frequency, cancel.Token);
        Task other = pacer.WaitUntilAsync(now + Stopwatch.Frequency / 50);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(HangGuard));
        await other.WaitAsync(HangGuard);
        Assert.True(other.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Dispose_CancelsWaitsNotYetDue_AndRefusesNewOnes()
    {
        var pacer = new Pacer();
        Task pending = pacer.WaitUntilAsync(Stopwatch.GetTimestamp() + 60 * Stopwatch.Frequency);

        pacer.Dispose();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(HangGuard));
        // Refused at the call, not through the task: a sender learns at once that the run is over.
        Assert.Throws<ObjectDisposedException>(() => { _ = pacer.WaitUntilAsync(Stopwatch.GetTimestamp() + Stopwatch.Frequency); });
    }

    [Fact]
    public async Task Dispose_FromAContinuationOnThePacersThread_DoesNotWaitForItself()
    {
        var pacer = new Pacer();
        Task later = pacer.WaitUntilAsync(Stopwatch.GetTimestamp() + 60 * Stopwatch.Frequency);

        // The load tester disposes the pacer after its last stream, whose end may run on the pacer's thread.
        await Task.Run(async () =>
        {
            await pacer.WaitUntilAsync(Stopwatch.GetTimestamp() + Stopwatch.Frequency / 100);
            pacer.Dispose();
        }).WaitAsync(HangGuard);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => later.WaitAsync(HangGuard));
    }
}
