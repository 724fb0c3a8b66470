using Loyalty.Storage.Reports;

namespace Loyalty.Storage;

/// <summary>
/// The ledger in process memory, with the same constraints as the databases: a member's
/// sequence and a program's transaction id are each taken once, conflicts are reported per
/// entry. Nothing survives the process: it exists to measure the engine without storage (the
/// ceiling the durable stores are compared with) and is never a production choice.
/// </summary>
public sealed class MemoryLedgerStore : ILedgerStore
{
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Program, string Member), List<LedgerEntry>> _members = [];
    private readonly Dictionary<(string Program, string Purchase), List<LedgerEntry>> _returnsOf = [];
    private readonly Dictionary<(string Program, string Transaction), LedgerEntry> _transactions = [];
    private readonly Dictionary<(string Program, string Member), DateTimeOffset> _due = [];
    private readonly Dictionary<(string Program, string Member), string> _profiles = [];

    /// <summary>Each program's entries in append order, with their row numbers (one counter for all programs).</summary>
    private readonly Dictionary<string, List<(long Row, string Member, long Sequence)>> _order = [];
    private long _rows;
    private readonly ReportTotals _reportTotals = new();
    private readonly HashSet<string> _rebuilds = new(StringComparer.Ordinal);

    /// <inheritdoc />
    public Task MigrateAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            foreach (DueChange change in dues)
            {
                ApplyDue(change);
            }

            for (int i = 0; i < entries.Count; i++)
            {
                inserted[i] = TryAppend(entries[i]);
            }

            if (groups.Count > 0 && EntryGroups.TakeBackPartial(entries, inserted, groups) is { } partial)
            {
                partial.ForEach(Remove);
            }

            _reportTotals.Add(ReportTotals.Of(entries, inserted));
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<ReportTotal>> ReadTotalsAsync(string programId, int fromDay, int toDay, bool perDay, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<ReportTotal> totals = [.. _reportTotals.Of(programId)
                .Where(t => t.Day >= fromDay && t.Day < toDay)
                .GroupBy(t => (Day: perDay ? t.Day : fromDay, t.Metric, t.Key))
                .Select(g => new ReportTotal(g.Key.Day, g.Key.Metric, g.Key.Key, g.Sum(t => t.Value)))
                .OrderBy(t => t.Day).ThenBy(t => t.Metric).ThenBy(t => t.Key, StringComparer.Ordinal)];
            return Task.FromResult(totals);
        }
    }

    /// <inheritdoc />
    public Task ReplaceTotalsAsync(string programId, ReportTotals totals, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _reportTotals.Remove(programId);
            _reportTotals.Add(totals);
            _rebuilds.Remove(programId);
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task MarkTotalsForRebuildAsync(string? programId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _rebuilds.UnionWith(programId is null ? _order.Keys : [programId]);
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<string>> ReadTotalsToRebuildAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult<IReadOnlyList<string>>([.. _rebuilds.Order(StringComparer.Ordinal)]);
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken) =>
        ReadAfterAsync(programId, memberId, afterSequence, int.MaxValue, cancellationToken);

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, int limit, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<LedgerEntry> rows = _members.TryGetValue((programId, memberId), out List<LedgerEntry>? list)
                ? [.. list.Where(e => e.Sequence > afterSequence).Take(limit)]
                : [];
            return Task.FromResult(rows);
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadPageAsync(string programId, string memberId, long beforeSequence, int limit, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<LedgerEntry> rows = _members.TryGetValue((programId, memberId), out List<LedgerEntry>? list)
                ? [.. list.Where(e => e.Sequence < beforeSequence).Reverse().Take(limit)]
                : [];
            return Task.FromResult(rows);
        }
    }

    /// <inheritdoc />
    /// <remarks>Entries are looked up in their member's list, so an anonymised entry reads anonymised.</remarks>
    public Task<IReadOnlyList<PositionedEntry>> ReadEventsAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var rows = new List<PositionedEntry>();
            if (_order.TryGetValue(programId, out List<(long Row, string Member, long Sequence)>? order))
            {
                int first = order.BinarySearch((after.Row + 1, "", 0), Comparer<(long Row, string Member, long Sequence)>.Create(static (a, b) => a.Row.CompareTo(b.Row)));
                for (int i = first < 0 ? ~first : first; i < order.Count && rows.Count < limit; i++)
                {
                    (long row, string member, long sequence) = order[i];
                    LedgerEntry entry = _members[(programId, member)].Find(e => e.Sequence == sequence)!;
                    rows.Add(new PositionedEntry(new EventPosition(0, row), entry));
                }
            }

            return Task.FromResult<IReadOnlyList<PositionedEntry>>(rows);
        }
    }

    /// <inheritdoc />
    public Task<PositionedEntry?> ReadEventAsync(string programId, string memberId, long sequence, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            LedgerEntry? entry = _members.TryGetValue((programId, memberId), out List<LedgerEntry>? list) ? list.Find(e => e.Sequence == sequence) : null;
            if (entry is null || !_order.TryGetValue(programId, out List<(long Row, string Member, long Sequence)>? order))
            {
                return Task.FromResult<PositionedEntry?>(null);
            }

            long row = order.FindLast(o => o.Member == memberId && o.Sequence == sequence).Row;
            return Task.FromResult<PositionedEntry?>(new PositionedEntry(new EventPosition(0, row), entry));
        }
    }

    /// <inheritdoc />
    public Task<EventPosition> ReadEventsEndAsync(string programId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_order.TryGetValue(programId, out List<(long Row, string Member, long Sequence)>? order) && order.Count > 0
                ? new EventPosition(0, order[^1].Row)
                : EventPosition.Start);
        }
    }

    /// <inheritdoc />
    public Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_transactions.GetValueOrDefault((programId, transactionId)));
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadReturnsOfAsync(string programId, string purchaseTransactionId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<LedgerEntry> returns = [.. _returnsOf.GetValueOrDefault((programId, purchaseTransactionId)) ?? []];
            return Task.FromResult(returns);
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<DueMember>> ClaimDueAsync(DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            List<DueMember> claimed = [.. _due.Where(d => d.Value <= now).OrderBy(d => d.Value).Take(limit).Select(d => new DueMember(d.Key.Program, d.Key.Member))];
            foreach (DueMember member in claimed)
            {
                _due[(member.ProgramId, member.MemberId)] = leaseUntil;
            }

            return Task.FromResult<IReadOnlyList<DueMember>>(claimed);
        }
    }

    /// <inheritdoc />
    public Task ScheduleProgramAsync(string programId, DateTimeOffset dueAt, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            foreach ((string program, string member) in _members.Keys.Where(k => k.Program == programId).ToList())
            {
                ApplyDue(new DueChange(program, member, dueAt, Exact: false));
            }
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<DateTimeOffset?> ReadDueAsync(string programId, string memberId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_due.TryGetValue((programId, memberId), out DateTimeOffset due) ? due : (DateTimeOffset?)null);
        }
    }

    /// <inheritdoc />
    public Task WriteProfileAsync(string programId, string memberId, string? fieldsJson, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (fieldsJson is null)
            {
                _profiles.Remove((programId, memberId));
            }
            else
            {
                _profiles[(programId, memberId)] = fieldsJson;
            }
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<string?> ReadProfileAsync(string programId, string memberId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_profiles.GetValueOrDefault((programId, memberId)));
        }
    }

    /// <inheritdoc />
    public Task<bool> HasEntriesAsync(string programId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_order.TryGetValue(programId, out var entries) && entries.Count > 0);
        }
    }

    /// <inheritdoc />
    public Task AnonymiseAsync(string programId, string memberId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_members.TryGetValue((programId, memberId), out List<LedgerEntry>? list))
            {
                for (int i = 0; i < list.Count; i++)
                {
                    LedgerEntry before = list[i];
                    list[i] = before.Kind switch
                    {
                        LedgerEntryKind.Adjust or LedgerEntryKind.MembershipCancelled or LedgerEntryKind.MergedIn or LedgerEntryKind.MergeStarted => list[i] with { Reason = "erased" },
                        LedgerEntryKind.Birthday => list[i] with { Reason = null },
                        LedgerEntryKind.Flags or LedgerEntryKind.Profile => list[i] with { Details = null },
                        LedgerEntryKind.Feedback => list[i] with { Reason = null },
                        LedgerEntryKind.CauseChosen => list[i] with { Reference = null },
                        _ => list[i],
                    };
                    if (!ReferenceEquals(before, list[i]) && before.TransactionId is { } txn
                        && _transactions.TryGetValue((programId, txn), out LedgerEntry? indexed) && ReferenceEquals(indexed, before))
                    {
                        // The index by transaction id reads the same row, as the SQL stores' do.
                        _transactions[(programId, txn)] = list[i];
                    }
                }
            }
        }

        return Task.CompletedTask;
    }

    private void ApplyDue(DueChange change)
    {
        (string, string) key = (change.ProgramId, change.MemberId);
        if (change.DueAt is not { } due)
        {
            // Only an exact change comes without a time: the commit queue refuses a mark without one (DueChange.Check).
            _due.Remove(key);
            return;
        }

        _due[key] = !change.Exact && _due.TryGetValue(key, out DateTimeOffset current) && current < due ? current : due;
    }

    private bool TryAppend(LedgerEntry entry)
    {
        if (entry.TransactionId is { } txn && _transactions.ContainsKey((entry.ProgramId, txn)))
        {
            return false;
        }

        if (!_members.TryGetValue((entry.ProgramId, entry.MemberId), out List<LedgerEntry>? list))
        {
            list = [];
            _members[(entry.ProgramId, entry.MemberId)] = list;
        }

        // Sequences arrive in order per member; keep the list sorted for a late one anyway.
        int at = list.Count;
        while (at > 0 && list[at - 1].Sequence >= entry.Sequence)
        {
            if (list[at - 1].Sequence == entry.Sequence)
            {
                return false;
            }

            at--;
        }

        list.Insert(at, entry);
        if (!_order.TryGetValue(entry.ProgramId, out List<(long Row, string Member, long Sequence)>? order))
        {
            order = [];
            _order[entry.ProgramId] = order;
        }

        order.Add((++_rows, entry.MemberId, entry.Sequence));
        if (entry.TransactionId is { } id)
        {
            _transactions[(entry.ProgramId, id)] = entry;
        }

        if (entry is { Kind: LedgerEntryKind.Return, Reference: { } purchase })
        {
            if (!_returnsOf.TryGetValue((entry.ProgramId, purchase), out List<LedgerEntry>? returns))
            {
                returns = [];
                _returnsOf[(entry.ProgramId, purchase)] = returns;
            }

            returns.Add(entry);
        }

        return true;
    }

    /// <summary>Takes back an entry this batch appended (the part of a group that could not go in whole).</summary>
    private void Remove(LedgerEntry entry)
    {
        _members[(entry.ProgramId, entry.MemberId)].Remove(entry);
        List<(long Row, string Member, long Sequence)> order = _order[entry.ProgramId];
        order.RemoveAt(order.FindLastIndex(o => o.Member == entry.MemberId && o.Sequence == entry.Sequence));
        if (entry.TransactionId is { } id)
        {
            _transactions.Remove((entry.ProgramId, id));
        }

        if (entry is { Kind: LedgerEntryKind.Return, Reference: { } purchase })
        {
            _returnsOf[(entry.ProgramId, purchase)].Remove(entry);
        }
    }

    /// <inheritdoc />
    public Task<HeldLock> LockAsync(string name, CancellationToken cancellationToken) => OneEngineLock.Take();

    /// <inheritdoc />
    /// <remarks>One engine: 0, as nothing is fenced here.</remarks>
    public Task<long> ReadLockEpochAsync(string name, CancellationToken cancellationToken) => Task.FromResult(0L);

    /// <inheritdoc />
    /// <remarks>One engine: the fences are not checked (a lock's holder dies with the steps it started).</remarks>
    public Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken) =>
        AppendBatchAsync(entries, inserted, dues, detailsJson, groups, cancellationToken);
}
