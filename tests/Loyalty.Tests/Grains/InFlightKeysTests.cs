using Loyalty.Grains;

namespace Loyalty.Tests.Grains;

/// <summary>The keys of changes waiting for their commit: waiters go only once every change under their hash has settled.</summary>
public sealed class InFlightKeysTests
{
    [Fact]
    public async Task Waiters_AreReleased_WhenTheLastChangeUnderTheirHashSettles()
    {
        var keys = new InFlightKeys();
        keys.Add(7);
        keys.Add(7);
        Task waiter = keys.WaitFor(7)!;

        keys.Remove(7);
        bool earlyRelease = waiter.IsCompleted;
        keys.Remove(7);

        Assert.False(earlyRelease);
        await waiter.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Null(keys.WaitFor(7));
    }

    [Fact]
    public async Task ManyKeys_AreTrackedApart_InlineAndBeyond()
    {
        var keys = new InFlightKeys();
        keys.Add(1);
        keys.Add(2);
        keys.Add(3);
        Task one = keys.WaitFor(1)!, two = keys.WaitFor(2)!, three = keys.WaitFor(3)!;

        keys.Remove(2);
        keys.Add(2);
        Task twoAgain = keys.WaitFor(2)!;
        keys.Remove(1);

        await Task.WhenAll(one, two).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(three.IsCompleted || twoAgain.IsCompleted);
        Assert.Null(keys.WaitFor(99));
    }
}
