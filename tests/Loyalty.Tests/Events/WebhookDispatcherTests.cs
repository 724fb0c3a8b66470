using Loyalty.Host.Webhooks;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Loyalty.Tests.Events;

/// <summary>The dispatcher's watch over redeliveries asked for by hand, at the start of a node's stop.</summary>
public sealed class WebhookDispatcherTests
{
    /// <summary>A dispatcher that only runs redeliveries by hand: nothing else of it is reached here.</summary>
    private static WebhookDispatcher Dispatcher(TimeProvider? clock = null) =>
        new(null!, null!, null!, null!, Options.Create(new WebhookOptions()), clock ?? TimeProvider.System, NullLogger<WebhookDispatcher>.Instance);

    [Fact]
    public async Task EndManual_WaitsForARedeliveryThatFinishes_WithoutAbandoningIt()
    {
        WebhookDispatcher dispatcher = Dispatcher();
        var answer = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        CancellationToken given = default;
        Task<string> run = dispatcher.TryRunManual(abandon => { given = abandon; return answer.Task; })!;

        Task ending = dispatcher.EndManualAsync(CancellationToken.None);
        await Task.Delay(200);
        bool endedBeforeTheAnswer = ending.IsCompleted;
        answer.SetResult("200");
        await ending.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.False(endedBeforeTheAnswer);
        Assert.Equal("200", await run);
        Assert.False(given.IsCancellationRequested);
    }

    [Fact]
    public async Task EndManual_AbandonsARedeliveryStillWaiting_AfterTheStopsWaitOfTenSeconds()
    {
        var clock = new FakeTimeProvider();
        WebhookDispatcher dispatcher = Dispatcher(clock);
        Task<string> run = dispatcher.TryRunManual(async abandon =>
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, abandon).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            return abandon.IsCancellationRequested ? WebhookSender.Abandoned : "never";
        })!;

        Task ending = dispatcher.EndManualAsync(CancellationToken.None);
        clock.Advance(TimeSpan.FromSeconds(9.9));
        await Task.Delay(200);
        bool abandonedEarly = run.IsCompleted;
        clock.Advance(TimeSpan.FromSeconds(0.1));
        await ending.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.False(abandonedEarly);
        Assert.Equal(WebhookSender.Abandoned, await run);
    }

    [Fact]
    public async Task TryRunManual_OnceTheStopHasBegun_StartsNothing()
    {
        WebhookDispatcher dispatcher = Dispatcher();
        await dispatcher.EndManualAsync(CancellationToken.None);
        bool started = false;

        Task<int>? run = dispatcher.TryRunManual(_ => { started = true; return Task.FromResult(1); });

        Assert.Null(run);
        Assert.False(started);
    }
}
