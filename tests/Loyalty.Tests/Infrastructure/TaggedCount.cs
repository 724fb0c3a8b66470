using System.Diagnostics.Metrics;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// The sum of a long counter's measurements that carry one tag value, from its creation to its
/// disposal. Listeners are process-wide and tests run side by side: the tag (a test's own program,
/// say) keeps other tests' measurements out.
/// </summary>
public sealed class TaggedCount : IDisposable
{
    private readonly MeterListener _listener = new();
    private long _sum;

    public TaggedCount(string instrumentName, string tagKey, object tagValue)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Name == instrumentName)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                if (tag.Key == tagKey && Equals(tag.Value, tagValue))
                {
                    Interlocked.Add(ref _sum, value);
                }
            }
        });
        _listener.Start();
    }

    /// <summary>The sum so far.</summary>
    public long Value => Interlocked.Read(ref _sum);

    /// <inheritdoc />
    public void Dispose() => _listener.Dispose();
}
