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
    private readonly Dictionary<(string Program, string Transaction), LedgerEntry> _transactions = [];
    private readonly Dictionary<(string Program, string Member), DateTimeOffset> _due = [];
    private readonly Dictionary<(string Program, string Member), string> _profiles = [];

    /// <inheritdoc />
    public Task MigrateAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<string?>? detailsJson, CancellationToken cancellationToken)
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
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<LedgerEntry> rows = _members.TryGetValue((programId, memberId), out List<LedgerEntry>? list)
                ? [.. list.Where(e => e.Sequence > afterSequence)]
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
    public Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return Task.FromResult(_transactions.GetValueOrDefault((programId, transactionId)));
        }
    }

    /// <inheritdoc />
    public Task<bool> AppendPairAsync(LedgerEntry first, LedgerEntry second, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            bool free = !Taken(first) && !Taken(second) && first.Sequence != second.Sequence
                && (first.TransactionId is null || first.TransactionId != second.TransactionId);
            if (free)
            {
                TryAppend(first);
                TryAppend(second);
            }

            return Task.FromResult(free);
        }
    }

    private bool Taken(LedgerEntry entry) =>
        (entry.TransactionId is { } txn && _transactions.ContainsKey((entry.ProgramId, txn)))
        || (_members.TryGetValue((entry.ProgramId, entry.MemberId), out List<LedgerEntry>? list) && list.Exists(e => e.Sequence == entry.Sequence));

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
    public Task AnonymiseAsync(string programId, string memberId, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_members.TryGetValue((programId, memberId), out List<LedgerEntry>? list))
            {
                for (int i = 0; i < list.Count; i++)
                {
                    list[i] = list[i].Kind switch
                    {
                        LedgerEntryKind.Adjust => list[i] with { Reason = "erased" },
                        LedgerEntryKind.Flags => list[i] with { Details = null },
                        _ => list[i],
                    };
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
            if (change.Exact)
            {
                _due.Remove(key);
            }

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
        if (entry.TransactionId is { } id)
        {
            _transactions[(entry.ProgramId, id)] = entry;
        }

        return true;
    }

    /// <inheritdoc />
    public Task<IAsyncDisposable> LockAsync(string name, CancellationToken cancellationToken) => OneEngineLock.Held;
}
