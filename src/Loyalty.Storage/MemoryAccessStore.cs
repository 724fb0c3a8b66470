namespace Loyalty.Storage;

/// <summary>The access store of the in-memory engine (benchmarks only): nothing survives a restart.</summary>
public sealed class MemoryAccessStore(TimeProvider clock) : IAccessStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, (AccessKeyRow Key, DateTimeOffset ChangedAt)> _keys = new(StringComparer.Ordinal);
    private readonly List<AuditRow> _audit = [];

    /// <inheritdoc />
    public Task<KeyInsert> InsertKeyAsync(AccessKeyRow key, KeyAllowance? allowance, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            KeyInsert outcome = _keys.ContainsKey(key.KeyId) ? KeyInsert.IdTaken
                : allowance is null ? KeyInsert.Inserted
                : CountActive(key.ProgramId, null, allowance.Now) >= allowance.ActiveMax ? KeyInsert.TooManyActive
                : _keys.Values.Count(e => e.Key.ProgramId == key.ProgramId && e.Key.CreatedAt >= allowance.CreatedSince) >= allowance.CreatedMax
                    ? KeyInsert.TooManyCreated
                : KeyInsert.Inserted;
            if (outcome == KeyInsert.Inserted)
            {
                _keys.Add(key.KeyId, (key, clock.GetUtcNow()));
            }

            return Task.FromResult(outcome);
        }
    }

    /// <inheritdoc />
    public Task<KeyRevocation> RevokeKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_keys.TryGetValue(keyId, out (AccessKeyRow Key, DateTimeOffset ChangedAt) entry))
            {
                return Task.FromResult(new KeyRevocation(null, LastOperatorKey: false));
            }

            if (entry.Key.RevokedAt is not null)
            {
                return Task.FromResult(new KeyRevocation(entry.Key, LastOperatorKey: false));
            }

            if (entry.Key.ProgramId.Length == 0 && !(entry.Key.ExpiresAt <= at) && CountActive("", keyId, at + IAccessStore.OperatorKeyLeftMargin) == 0)
            {
                return Task.FromResult(new KeyRevocation(entry.Key, LastOperatorKey: true));
            }

            entry = (entry.Key with { RevokedAt = at }, clock.GetUtcNow());
            _keys[keyId] = entry;
            return Task.FromResult(new KeyRevocation(entry.Key, LastOperatorKey: false));
        }
    }

    private int CountActive(string programId, string? exceptKeyId, DateTimeOffset now) =>
        _keys.Values.Count(e => e.Key.ProgramId == programId && e.Key.KeyId != exceptKeyId && e.Key.RevokedAt is null && !(e.Key.ExpiresAt <= now));

    /// <inheritdoc />
    public Task<(IReadOnlyList<AccessKeyRow> Keys, DateTimeOffset DatabaseNow)> ReadKeysChangedSinceAsync(DateTimeOffset? since, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            AccessKeyRow[] keys = [.. _keys.Values.Where(e => since is null || e.ChangedAt >= since).Select(e => e.Key)];
            return Task.FromResult<(IReadOnlyList<AccessKeyRow>, DateTimeOffset)>((keys, clock.GetUtcNow()));
        }
    }

    /// <inheritdoc />
    public Task<int> ClearKeysEndedBeforeAsync(DateTimeOffset before, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            (AccessKeyRow Key, DateTimeOffset ChangedAt)[] ended = [.. _keys.Values.Where(e =>
                e.Key.EndedBefore(before) && (e.Key.Name.Length > 0 || e.Key.StoreIds.Length > 0))];
            foreach ((AccessKeyRow key, DateTimeOffset changedAt) in ended)
            {
                _keys[key.KeyId] = (key with { Name = "", StoreIds = "" }, changedAt);
            }

            return Task.FromResult(ended.Length);
        }
    }

    /// <inheritdoc />
    public Task<long> AppendAuditAsync(AuditRow record, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            long id = _audit.Count + 1;
            _audit.Add(record with { Id = id });
            return Task.FromResult(id);
        }
    }

    /// <inheritdoc />
    public Task CompleteAuditAsync(long id, string outcome, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _audit[(int)(id - 1)] = _audit[(int)(id - 1)] with { Outcome = outcome };
            return Task.CompletedTask;
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<AuditRow>> ReadAuditAsync(string programId, long beforeId, int limit, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            AuditRow[] page = [.. Enumerable.Reverse(_audit).Where(r => r.ProgramId == programId && r.Id < beforeId).Take(limit)];
            return Task.FromResult<IReadOnlyList<AuditRow>>(page);
        }
    }
}
