namespace Loyalty.Storage.Reports;

/// <summary>
/// Report totals added up over a batch of entries (or a whole ledger, when rebuilding), one
/// number per (program, day, metric, key); written with one statement per batch.
/// </summary>
public sealed class ReportTotals
{
    private readonly Dictionary<(string Program, int Day, ReportMetric Metric, string Key), long> _totals = [];

    /// <summary>How many distinct totals are held.</summary>
    public int Count => _totals.Count;

    /// <summary>The totals in no particular order.</summary>
    public IEnumerable<(string Program, ReportTotal Total)> All =>
        _totals.Select(t => (t.Key.Program, new ReportTotal(t.Key.Day, t.Key.Metric, t.Key.Key, t.Value)));

    /// <summary>The totals, sorted by program, day, metric and key (the order rows are locked in).</summary>
    public IEnumerable<(string Program, ReportTotal Total)> Sorted
    {
        get
        {
            var sorted = new List<(string Program, ReportTotal Total)>(_totals.Count);
            SortInto(sorted);
            return sorted;
        }
    }

    /// <summary>
    /// Replaces <paramref name="sorted"/>'s contents with the totals in <see cref="Sorted"/>'s order,
    /// allocating nothing once the list has room (a writer reuses one for each batch).
    /// </summary>
    public void SortInto(List<(string Program, ReportTotal Total)> sorted)
    {
        sorted.Clear();
        foreach (KeyValuePair<(string Program, int Day, ReportMetric Metric, string Key), long> t in _totals)
        {
            sorted.Add((t.Key.Program, new ReportTotal(t.Key.Day, t.Key.Metric, t.Key.Key, t.Value)));
        }

        sorted.Sort(LockOrder);
    }

    /// <summary>Program, day, metric, key: the order rows are locked in, so two writers sharing a slot cannot deadlock.</summary>
    private static readonly Comparison<(string Program, ReportTotal Total)> LockOrder = static (a, b) =>
    {
        int c = string.CompareOrdinal(a.Program, b.Program);
        c = c != 0 ? c : a.Total.Day.CompareTo(b.Total.Day);
        c = c != 0 ? c : a.Total.Metric.CompareTo(b.Total.Metric);
        return c != 0 ? c : string.CompareOrdinal(a.Total.Key, b.Total.Key);
    };

    /// <summary>The totals in no particular order, walked without allocating (the SQLite writer's batches).</summary>
    public Dictionary<(string Program, int Day, ReportMetric Metric, string Key), long>.Enumerator GetEnumerator() => _totals.GetEnumerator();

    /// <summary>The totals of the entries <paramref name="inserted"/> says were written.</summary>
    public static ReportTotals Of(IReadOnlyList<LedgerEntry> entries, bool[] inserted)
    {
        var totals = new ReportTotals();
        totals.AddWritten(entries, inserted);
        return totals;
    }

    /// <summary>Adds the contributions of the entries <paramref name="inserted"/> says were written.</summary>
    public void AddWritten(IReadOnlyList<LedgerEntry> entries, bool[] inserted)
    {
        for (int i = 0; i < entries.Count; i++)
        {
            if (inserted[i])
            {
                ReportFacts.Collect(entries[i], this);
            }
        }
    }

    /// <summary>Forgets every total, keeping the room they took (a writer reuses one for each batch).</summary>
    public void Clear() => _totals.Clear();

    /// <summary>
    /// Adds <paramref name="value"/> to a total (nothing for zero). Saturating, never throwing: a
    /// total past 64 bits (no real programme gets near) must not fail the ledger's commit.
    /// </summary>
    public void Add(string programId, int day, ReportMetric metric, string key, long value)
    {
        if (value == 0)
        {
            return;
        }

        var at = (programId, day, metric, key);
        _totals[at] = SaturatingAdd(_totals.GetValueOrDefault(at), value);
    }

    /// <summary>a + b, held at <see cref="long.MaxValue"/> or <see cref="long.MinValue"/> instead of overflowing.</summary>
    public static long SaturatingAdd(long a, long b) => (long)Int128.Clamp((Int128)a + b, long.MinValue, long.MaxValue);

    /// <summary>Adds every total of <paramref name="other"/>.</summary>
    public void Add(ReportTotals other)
    {
        foreach (KeyValuePair<(string Program, int Day, ReportMetric Metric, string Key), long> t in other._totals)
        {
            Add(t.Key.Program, t.Key.Day, t.Key.Metric, t.Key.Key, t.Value);
        }
    }

    /// <summary>Removes a program's totals.</summary>
    public void Remove(string programId)
    {
        foreach ((string, int, ReportMetric, string) key in _totals.Keys.Where(k => k.Program == programId).ToList())
        {
            _totals.Remove(key);
        }
    }

    /// <summary>A program's totals (unsorted).</summary>
    public IEnumerable<ReportTotal> Of(string programId) =>
        _totals.Where(t => t.Key.Program == programId).Select(t => new ReportTotal(t.Key.Day, t.Key.Metric, t.Key.Key, t.Value));

    /// <summary>Adds an entry's contribution.</summary>
    public void Add(LedgerEntry entry) => ReportFacts.Collect(entry, this);
}
