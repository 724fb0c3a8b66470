namespace Loyalty.Storage;

/// <summary>
/// The webhook store of the in-memory engine (benchmarks only): nothing survives a restart. It keeps
/// the rules of the SQL stores (leases, the bounded log, no attempts for a deleted subscription), so
/// the dispatcher behaves the same on it.
/// </summary>
public sealed class MemoryWebhookStore : IWebhookStore
{
    private static readonly Comparer<(string ProgramId, string WebhookId)> KeyOrder = Comparer<(string ProgramId, string WebhookId)>.Create(
        static (a, b) => string.CompareOrdinal(a.ProgramId, b.ProgramId) is var byProgram and not 0
            ? byProgram
            : string.CompareOrdinal(a.WebhookId, b.WebhookId));

    private readonly Lock _lock = new();
    private readonly SortedDictionary<(string ProgramId, string WebhookId), Subscription> _webhooks = new(KeyOrder);
    private readonly Dictionary<(string ProgramId, string WebhookId), List<WebhookAttemptRow>> _attempts = [];
    private long _lastAttemptId;

    /// <inheritdoc />
    public Task<bool> TryInsertAsync(WebhookRow row, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(row);
        lock (_lock)
        {
            return Task.FromResult(_webhooks.TryAdd((row.ProgramId, row.WebhookId), new Subscription(row, null, null)));
        }
    }

    /// <inheritdoc />
    public Task<WebhookRow?> GetAsync(string programId, string webhookId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_webhooks.TryGetValue((programId, webhookId), out Subscription? s) ? s.Row : null);
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<WebhookRow>> ListAsync(string programId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            WebhookRow[] rows = [.. _webhooks.Where(e => e.Key.ProgramId == programId).Select(e => e.Value.Row)];
            return Task.FromResult<IReadOnlyList<WebhookRow>>(rows);
        }
    }

    /// <inheritdoc />
    public Task<bool> UpdateConfigAsync(string programId, string webhookId, string url, string types, bool enabled, string? disabledReason, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_webhooks.TryGetValue((programId, webhookId), out Subscription? s))
            {
                return Task.FromResult(false);
            }

            // As in SQL: FailingSince is the lease holder's while enabled; the lease runs out by itself.
            WebhookRow row = s.Row with
            {
                Url = url,
                Types = types,
                Enabled = enabled,
                DisabledReason = enabled ? null : disabledReason,
                FailingSince = enabled && !s.Row.Enabled ? null : s.Row.FailingSince,
                UpdatedAt = at,
            };
            _webhooks[(programId, webhookId)] = s with { Row = row };
            return Task.FromResult(true);
        }
    }

    /// <inheritdoc />
    public Task<bool> RotateSecretAsync(string programId, string webhookId, string newSecret, DateTimeOffset previousUntil, int? expectedKeyVersion, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_webhooks.TryGetValue((programId, webhookId), out Subscription? s)
                || (expectedKeyVersion is int expected && s.Row.KeyVersion != expected))
            {
                return Task.FromResult(false);
            }

            WebhookRow row = s.Row with
            {
                PreviousSecret = s.Row.Secret,
                PreviousSecretUntil = previousUntil,
                Secret = newSecret,
                KeyVersion = s.Row.KeyVersion + 1,
                UpdatedAt = at,
            };
            _webhooks[(programId, webhookId)] = s with { Row = row };
            return Task.FromResult(true);
        }
    }

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string programId, string webhookId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _attempts.Remove((programId, webhookId));
            return Task.FromResult(_webhooks.Remove((programId, webhookId)));
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<WebhookRow>> ClaimAsync(string owner, DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        lock (_lock)
        {
            (string, string)[] keys = [.. _webhooks.Where(e => e.Value.IsClaimableBy(owner, now)).OrderBy(e => e.Value.LeaseOwner == owner)
                .ThenBy(e => e.Value.LeaseUntil ?? DateTimeOffset.MinValue).ThenBy(e => e.Key.Item1, StringComparer.Ordinal).ThenBy(e => e.Key.Item2, StringComparer.Ordinal).Take(limit).Select(e => e.Key)];
            var claimed = new List<WebhookRow>(keys.Length);
            foreach ((string, string) key in keys)
            {
                Subscription s = _webhooks[key];
                _webhooks[key] = s with { LeaseOwner = owner, LeaseUntil = leaseUntil };
                claimed.Add(s.Row);
            }

            return Task.FromResult<IReadOnlyList<WebhookRow>>(claimed);
        }
    }

    /// <inheritdoc />
    public Task<bool> SaveProgressAsync(string programId, string webhookId, string owner, string position, DateTimeOffset? failingSince, DateTimeOffset leaseUntil, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!TryGetHeld(programId, webhookId, owner, out Subscription? s))
            {
                return Task.FromResult(false);
            }

            _webhooks[(programId, webhookId)] = s with
            {
                Row = s.Row with { Position = position, FailingSince = failingSince },
                LeaseUntil = leaseUntil,
            };
            return Task.FromResult(true);
        }
    }

    /// <inheritdoc />
    public Task<bool> DisableAsync(string programId, string webhookId, string owner, DateTimeOffset seenUpdatedAt, string reason, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!TryGetHeld(programId, webhookId, owner, out Subscription? s) || s.Row.UpdatedAt != seenUpdatedAt)
            {
                return Task.FromResult(false);
            }

            WebhookRow row = s.Row with { Enabled = false, DisabledReason = reason, UpdatedAt = at };
            _webhooks[(programId, webhookId)] = new Subscription(row, null, null);
            return Task.FromResult(true);
        }
    }

    /// <inheritdoc />
    public Task ReleaseAsync(string programId, string webhookId, string owner, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (TryGetHeld(programId, webhookId, owner, out Subscription? s))
            {
                _webhooks[(programId, webhookId)] = s with { LeaseOwner = null, LeaseUntil = null };
            }

            return Task.CompletedTask;
        }
    }

    /// <inheritdoc />
    public Task YieldAsync(string programId, string webhookId, string owner, DateTimeOffset at, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (TryGetHeld(programId, webhookId, owner, out Subscription? s))
            {
                _webhooks[(programId, webhookId)] = s with { LeaseOwner = null, LeaseUntil = at };
            }

            return Task.CompletedTask;
        }
    }

    /// <inheritdoc />
    public Task<int> CountWaitingAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_webhooks.Values.Count(s => s.Row.Enabled && (s.LeaseUntil is null || s.LeaseUntil < now)));
        }
    }

    /// <inheritdoc />
    public Task AppendAttemptsAsync(IReadOnlyList<WebhookAttemptRow> attempts, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(attempts);
        lock (_lock)
        {
            foreach (WebhookAttemptRow attempt in attempts)
            {
                (string, string) key = (attempt.ProgramId, attempt.WebhookId);
                if (!_webhooks.ContainsKey(key))
                {
                    continue;
                }

                if (!_attempts.TryGetValue(key, out List<WebhookAttemptRow>? log))
                {
                    log = [];
                    _attempts[key] = log;
                }

                log.Add(attempt with { Id = ++_lastAttemptId });
                if (log.Count > IWebhookStore.AttemptsKeptPerWebhook)
                {
                    log.RemoveAt(0);
                }
            }

            return Task.CompletedTask;
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<WebhookAttemptRow>> ReadAttemptsAsync(string programId, string webhookId, long beforeId, int limit, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        lock (_lock)
        {
            WebhookAttemptRow[] page = _attempts.TryGetValue((programId, webhookId), out List<WebhookAttemptRow>? log)
                ? [.. Enumerable.Reverse(log).Where(a => a.Id < beforeId).Take(limit)]
                : [];
            return Task.FromResult<IReadOnlyList<WebhookAttemptRow>>(page);
        }
    }

    private bool TryGetHeld(string programId, string webhookId, string owner, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Subscription? held)
    {
        held = _webhooks.TryGetValue((programId, webhookId), out Subscription? s) && s.LeaseOwner == owner && s.Row.Enabled ? s : null;
        return held is not null;
    }

    /// <summary>A subscription and its lease, which the row itself does not show.</summary>
    private sealed record Subscription(WebhookRow Row, string? LeaseOwner, DateTimeOffset? LeaseUntil)
    {
        public bool IsClaimableBy(string owner, DateTimeOffset now) =>
            Row.Enabled && (LeaseUntil is null || LeaseUntil < now || LeaseOwner == owner);
    }
}
