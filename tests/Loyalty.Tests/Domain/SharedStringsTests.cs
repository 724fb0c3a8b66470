using Loyalty.Grains;

namespace Loyalty.Tests.Domain;

/// <summary>One copy of each of a bounded number of strings (the program ids members share).</summary>
public sealed class SharedStringsTests
{
    // Equal to the given text but a distinct object, as each grain's key cuts its own.
    private static string Fresh(string text) => new(text.AsSpan());

    [Fact]
    public void EqualStrings_GetTheFirstCopy()
    {
        var shared = new SharedStrings(10);
        string first = Fresh("acme");

        Assert.Same(first, shared.Share(first));
        Assert.Same(first, shared.Share(Fresh("acme")));
        Assert.NotSame(first, shared.Share(Fresh("other")));
    }

    [Fact]
    public void PastTheBound_StringsComeBackAsGiven_AndThoseKeptStayShared()
    {
        var shared = new SharedStrings(3);
        string[] kept = [.. Enumerable.Range(0, 3).Select(i => shared.Share(Fresh($"p{i}")))];

        string late = Fresh("p3");
        Assert.Same(late, shared.Share(late));
        Assert.NotSame(late, shared.Share(Fresh("p3")));
        Assert.All(Enumerable.Range(0, 3), i => Assert.Same(kept[i], shared.Share(Fresh($"p{i}"))));
    }

    [Fact]
    public void ManyCallersAtOnce_KeepNoMoreThanTheBound()
    {
        var shared = new SharedStrings(50);
        Parallel.For(0, 8, t =>
        {
            for (int i = 0; i < 200; i++)
            {
                shared.Share(Fresh($"p{(i * 7 + t * 13) % 100}"));
            }
        });

        // An id is kept when a fresh equal string gets another copy back.
        int kept = Enumerable.Range(0, 100).Count(i =>
        {
            string fresh = Fresh($"p{i}");
            return !ReferenceEquals(fresh, shared.Share(fresh));
        });
        Assert.Equal(50, kept);
    }
}
