using System.Collections.Concurrent;

namespace Loyalty.Grains;

/// <summary>
/// One copy of each of a bounded number of strings (like <see cref="string.Intern"/>, which keeps
/// every string for the life of the process): the first <see cref="Max"/> distinct values are kept
/// and handed out for any equal string; later ones come back as given.
/// </summary>
/// <param name="max">How many distinct strings are kept.</param>
public sealed class SharedStrings(int max)
{
    private readonly ConcurrentDictionary<string, string> _kept = new(StringComparer.Ordinal);

    // How many are kept, counted here: ConcurrentDictionary.Count takes every lock.
    private int _count;

    /// <summary>How many distinct strings are kept.</summary>
    public int Max { get; } = max;

    /// <summary>The kept copy of <paramref name="value"/>, kept now if there is room; else <paramref name="value"/> itself.</summary>
    public string Share(string value)
    {
        if (_kept.TryGetValue(value, out string? kept))
        {
            return kept;
        }

        // A slot is taken before the string is kept, so that callers at the same moment never
        // keep more than Max; a slot not used (the bound was passed, or an equal string was kept
        // meanwhile) is given back.
        if (Volatile.Read(ref _count) < Max)
        {
            if (Interlocked.Increment(ref _count) <= Max)
            {
                kept = _kept.GetOrAdd(value, value);
                if (!ReferenceEquals(kept, value))
                {
                    Interlocked.Decrement(ref _count);
                }

                return kept;
            }

            Interlocked.Decrement(ref _count);
        }

        return _kept.TryGetValue(value, out kept) ? kept : value;
    }
}
