namespace Loyalty.Host;

/// <summary>
/// Places counted per key (a program): each key holds at most <paramref name="maxPerKey"/> at
/// once, so that one retailer cannot take every place of a node that others share. Only keys
/// holding places are kept: the count does not grow with the keys ever seen.
/// </summary>
public sealed class KeyedPlaces(int maxPerKey)
{
    private readonly Dictionary<string, int> _held = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    /// <summary>The most places one key holds at once.</summary>
    public int MaxPerKey => maxPerKey;

    /// <summary>Takes a place for <paramref name="key"/>; false when it holds as many as it may.</summary>
    public bool TryTake(string key)
    {
        lock (_lock)
        {
            int held = _held.GetValueOrDefault(key);
            if (held >= maxPerKey)
            {
                return false;
            }

            _held[key] = held + 1;
            return true;
        }
    }

    /// <summary>Gives back a place <see cref="TryTake"/> gave <paramref name="key"/>.</summary>
    public void GiveBack(string key)
    {
        lock (_lock)
        {
            int left = _held.GetValueOrDefault(key) - 1;
            if (left > 0)
            {
                _held[key] = left;
            }
            else
            {
                _held.Remove(key);
            }
        }
    }
}
