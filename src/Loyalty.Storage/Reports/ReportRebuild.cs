namespace Loyalty.Storage.Reports;

/// <summary>
/// Rebuilds report totals from the ledger, for programs whose ledgers are older than their totals
/// (written before reports existed) or that an operator listed in <c>report_rebuilds</c>.
/// It must run while nothing writes to the program: the engine does it when it starts, before it
/// serves, under a lock that other starting engines wait on.
/// </summary>
public static class ReportRebuild
{
    /// <summary>Entries read from the ledger at a time.</summary>
    public const int PageEntries = 5_000;

    private const string LockName = "loyalty.report-totals.rebuild";

    /// <summary>Rebuilds every program on the list; returns the programs and entries it read.</summary>
    public static async Task<(int Programs, long Entries)> RunDueAsync(ILedgerStore store, CancellationToken cancellationToken)
    {
        await using IAsyncDisposable held = await store.LockAsync(LockName, cancellationToken);
        IReadOnlyList<string> due = await store.ReadTotalsToRebuildAsync(cancellationToken);
        long entries = 0;
        foreach (string programId in due)
        {
            entries += await RebuildAsync(store, programId, cancellationToken);
        }

        return (due.Count, entries);
    }

    /// <summary>Reads a program's whole ledger in commit order, adds up its totals and replaces the stored ones.</summary>
    public static async Task<long> RebuildAsync(ILedgerStore store, string programId, CancellationToken cancellationToken)
    {
        var totals = new ReportTotals();
        long read = 0;
        EventPosition after = EventPosition.Start;
        while (true)
        {
            IReadOnlyList<PositionedEntry> page = await store.ReadCommittedAsync(programId, after, PageEntries, cancellationToken);
            if (page.Count == 0)
            {
                break;
            }

            foreach (PositionedEntry positioned in page)
            {
                totals.Add(positioned.Entry);
            }

            read += page.Count;
            after = page[^1].Position;
        }

        await store.ReplaceTotalsAsync(programId, totals, cancellationToken);
        return read;
    }
}
