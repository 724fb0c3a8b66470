using System.Data.Common;
using static Loyalty.Storage.SqlCommands;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Loyalty.Storage;

/// <summary>
/// <see cref="IWebhookStore"/> over SQL. The statements are the same for both databases (both accept
/// <c>@name</c> parameters) except the claim and one row lock; the dialects also differ in how they
/// open connections and store time. Every write of delivery progress is conditional on
/// <c>lease_owner</c>, so a node that lost its lease writes nothing. Attempts of a subscription that
/// no longer exists are not appended, so a node that flushes its log after the subscription was
/// deleted does not bring part of that log back.
/// </summary>
public abstract class SqlWebhookStore : IWebhookStore
{
    /// <summary>The columns of a <see cref="WebhookRow"/>, in the order of its parameters.</summary>
    protected const string WebhookColumns =
        "program_id, webhook_id, url, types, secret, key_version, previous_secret, previous_secret_until, " +
        "enabled, disabled_reason, failing_since, position, created_at, updated_at";

    private const string AttemptColumns =
        "id, program_id, webhook_id, delivery_id, event_id, event_type, member_id, attempt, at, status_code, latency_ms, error, manual";

    private const string ByKey = "program_id = @p AND webhook_id = @w";

    /// <summary>Deletes a webhook's attempts older than the newest <c>@keep</c> (none when it has no more than that).</summary>
    private const string TrimSql =
        $"DELETE FROM webhook_attempts WHERE {ByKey} AND id <= " +
        $"(SELECT id FROM webhook_attempts WHERE {ByKey} ORDER BY id DESC LIMIT 1 OFFSET @keep);";

    /// <summary>
    /// The claim: sets <c>lease_owner = @o</c> and <c>lease_until = @until</c> on up to <c>@l</c>
    /// enabled rows whose lease is unset, ended before <c>@now</c> or is already <c>@o</c>'s, and
    /// returns their <see cref="WebhookColumns"/>. Two claims at once must never both take one row.
    /// </summary>
    protected abstract string ClaimSql { get; }

    /// <summary>
    /// A locking clause for the check that an appended attempt's subscription exists, so that an
    /// append and a delete of that subscription happen one after the other; empty where writers
    /// are serialized anyway.
    /// </summary>
    protected abstract string AppendLockSql { get; }

    /// <summary>Opens a connection.</summary>
    protected abstract Task<DbConnection> OpenAsync(CancellationToken cancellationToken);

    /// <summary>A time as the dialect stores it.</summary>
    protected abstract object ToDb(DateTimeOffset value);

    /// <summary>A stored time back.</summary>
    protected abstract DateTimeOffset FromDb(DbDataReader reader, int ordinal);

    /// <inheritdoc />
    public async Task<bool> TryInsertAsync(WebhookRow row, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(row);
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"INSERT INTO webhooks ({WebhookColumns}) VALUES (@p, @w, @u, @t, @s, @k, @ps, @pu, @e, @r, @f, @pos, @c, @up) " +
            "ON CONFLICT (program_id, webhook_id) DO NOTHING;",
            ("@p", row.ProgramId), ("@w", row.WebhookId), ("@u", row.Url), ("@t", row.Types), ("@s", row.Secret),
            ("@k", row.KeyVersion), ("@ps", OrNull(row.PreviousSecret)), ("@pu", ToDbOrNull(row.PreviousSecretUntil)),
            ("@e", row.Enabled), ("@r", OrNull(row.DisabledReason)), ("@f", ToDbOrNull(row.FailingSince)),
            ("@pos", row.Position), ("@c", ToDb(row.CreatedAt)), ("@up", ToDb(row.UpdatedAt)));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task<WebhookRow?> GetAsync(string programId, string webhookId, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection, $"SELECT {WebhookColumns} FROM webhooks WHERE {ByKey};",
            ("@p", programId), ("@w", webhookId));
        List<WebhookRow> rows = await ReadWebhooksAsync(command, cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<WebhookRow>> ListAsync(string programId, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"SELECT {WebhookColumns} FROM webhooks WHERE program_id = @p ORDER BY webhook_id;", ("@p", programId));
        return await ReadWebhooksAsync(command, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> UpdateConfigAsync(string programId, string webhookId, string url, string types, bool enabled, string? disabledReason, DateTimeOffset at, CancellationToken cancellationToken)
    {
        // Disabling keeps the lease: the delivering node's next SaveProgress fails (it needs the
        // subscription enabled) and it stops, and no other node may claim the subscription before
        // that lease runs out, even if it is enabled again at once, so two nodes never deliver it
        // together. FailingSince is cleared only when a disabled subscription is enabled again:
        // while it is enabled, that column belongs to the node holding the lease.
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "UPDATE webhooks SET url = @u, types = @t, " +
            "disabled_reason = CASE WHEN @e THEN NULL ELSE @r END, " +
            "failing_since = CASE WHEN @e AND NOT enabled THEN NULL ELSE failing_since END, " +
            $"enabled = @e, updated_at = @at WHERE {ByKey};",
            ("@p", programId), ("@w", webhookId), ("@u", url), ("@t", types), ("@e", enabled),
            ("@r", OrNull(disabledReason)), ("@at", ToDb(at)));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task<bool> RotateSecretAsync(string programId, string webhookId, string newSecret, DateTimeOffset previousUntil, int? expectedKeyVersion, DateTimeOffset at, CancellationToken cancellationToken)
    {
        // Every right-hand side reads the row as it was, so previous_secret gets the old secret.
        // The version's check is in the statement, so two rotations from one version never both apply.
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "UPDATE webhooks SET previous_secret = secret, previous_secret_until = @pu, secret = @s, " +
            $"key_version = key_version + 1, updated_at = @at WHERE {ByKey}" +
            (expectedKeyVersion is null ? ";" : " AND key_version = @kv;"),
            ("@p", programId), ("@w", webhookId), ("@s", newSecret), ("@pu", ToDb(previousUntil)),
            ("@kv", expectedKeyVersion ?? 0), ("@at", ToDb(at)));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task<bool> DeleteAsync(string programId, string webhookId, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        bool deleted;
        // The subscription first: its row lock makes a concurrent append wait, then find it gone.
        await using (DbCommand webhook = Command(transaction, $"DELETE FROM webhooks WHERE {ByKey};", ("@p", programId), ("@w", webhookId)))
        {
            deleted = await webhook.ExecuteNonQueryAsync(cancellationToken) == 1;
        }

        await using (DbCommand log = Command(transaction, $"DELETE FROM webhook_attempts WHERE {ByKey};", ("@p", programId), ("@w", webhookId)))
        {
            await log.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
        return deleted;
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<WebhookRow>> ClaimAsync(string owner, DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken)
    {
        // SQLite reads a negative LIMIT as no limit at all.
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection, ClaimSql,
            ("@o", owner), ("@now", ToDb(now)), ("@until", ToDb(leaseUntil)), ("@l", limit));
        return await ReadWebhooksAsync(command, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> SaveProgressAsync(string programId, string webhookId, string owner, string position, DateTimeOffset? failingSince, DateTimeOffset leaseUntil, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "UPDATE webhooks SET position = @pos, failing_since = @f, lease_until = @until " +
            $"WHERE {ByKey} AND lease_owner = @o AND enabled;",
            ("@p", programId), ("@w", webhookId), ("@o", owner), ("@pos", position), ("@f", ToDbOrNull(failingSince)),
            ("@until", ToDb(leaseUntil)));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task<bool> DisableAsync(string programId, string webhookId, string owner, DateTimeOffset seenUpdatedAt, string reason, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "UPDATE webhooks SET enabled = @e, disabled_reason = @r, updated_at = @at, lease_owner = NULL, lease_until = NULL " +
            $"WHERE {ByKey} AND lease_owner = @o AND enabled AND updated_at = @seen;",
            ("@p", programId), ("@w", webhookId), ("@o", owner), ("@e", false), ("@r", reason), ("@at", ToDb(at)), ("@seen", ToDb(seenUpdatedAt)));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task ReleaseAsync(string programId, string webhookId, string owner, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"UPDATE webhooks SET lease_owner = NULL, lease_until = NULL WHERE {ByKey} AND lease_owner = @o;",
            ("@p", programId), ("@w", webhookId), ("@o", owner));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task YieldAsync(string programId, string webhookId, string owner, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"UPDATE webhooks SET lease_owner = NULL, lease_until = @at WHERE {ByKey} AND lease_owner = @o;",
            ("@p", programId), ("@w", webhookId), ("@o", owner), ("@at", ToDb(at)));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<int> CountWaitingAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "SELECT COUNT(*) FROM webhooks WHERE enabled AND (lease_until IS NULL OR lease_until < @now);", ("@now", ToDb(now)));
        return Convert.ToInt32(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <inheritdoc />
    public async Task AppendAttemptsAsync(IReadOnlyList<WebhookAttemptRow> attempts, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(attempts);
        if (attempts.Count == 0)
        {
            return;
        }

        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        foreach (IGrouping<(string ProgramId, string WebhookId), WebhookAttemptRow> webhook in attempts.GroupBy(a => (a.ProgramId, a.WebhookId)))
        {
            await InsertAttemptsAsync(transaction, webhook.Key.ProgramId, webhook.Key.WebhookId, [.. webhook], cancellationToken);
        }

        // In one order on every node, so two appends that trim the same webhooks never deadlock.
        foreach ((string programId, string webhookId) in attempts.Select(a => (a.ProgramId, a.WebhookId)).Distinct()
            .OrderBy(k => k.ProgramId, StringComparer.Ordinal).ThenBy(k => k.WebhookId, StringComparer.Ordinal))
        {
            await using DbCommand trim = Command(transaction, TrimSql,
                ("@p", programId), ("@w", webhookId), ("@keep", IWebhookStore.AttemptsKeptPerWebhook));
            await trim.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<WebhookAttemptRow>> ReadAttemptsAsync(string programId, string webhookId, long beforeId, int limit, CancellationToken cancellationToken)
    {
        // SQLite reads a negative LIMIT as no limit at all.
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"SELECT {AttemptColumns} FROM webhook_attempts WHERE {ByKey} AND id < @b ORDER BY id DESC LIMIT @l;",
            ("@p", programId), ("@w", webhookId), ("@b", beforeId), ("@l", limit));
        await using DbDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        var attempts = new List<WebhookAttemptRow>();
        while (await reader.ReadAsync(cancellationToken))
        {
            attempts.Add(ReadAttempt(reader));
        }

        return attempts;
    }

    /// <summary>Rows per INSERT statement: few round trips, far below either database's parameter limit.</summary>
    private const int AttemptsPerStatement = 100;

    /// <summary>
    /// Inserts one webhook's attempts with a few multi-row statements, so that the transaction
    /// (which on PostgreSQL holds back the event horizon while it runs) stays short.
    /// </summary>
    private async Task InsertAttemptsAsync(DbTransaction transaction, string programId, string webhookId, WebhookAttemptRow[] rows, CancellationToken cancellationToken)
    {
        // The subscription must still exist; on PostgreSQL its key lock makes a concurrent delete wait for this append.
        await using (DbCommand exists = Command(transaction, $"SELECT 1 FROM webhooks WHERE {ByKey}{AppendLockSql};", ("@p", programId), ("@w", webhookId)))
        {
            if (await exists.ExecuteScalarAsync(cancellationToken) is null)
            {
                return;
            }
        }

        foreach (WebhookAttemptRow[] chunk in rows.Chunk(AttemptsPerStatement))
        {
            var values = new System.Text.StringBuilder();
            var parameters = new List<(string, object)> { ("@p", programId), ("@w", webhookId) };
            for (int i = 0; i < chunk.Length; i++)
            {
                WebhookAttemptRow a = chunk[i];
                values.Append(i == 0 ? "" : ", ").Append(System.Globalization.CultureInfo.InvariantCulture,
                    $"(@p, @w, @d{i}, @ev{i}, @et{i}, @m{i}, @a{i}, @at{i}, @sc{i}, @ms{i}, @er{i}, @man{i})");
                parameters.AddRange([($"@d{i}", a.DeliveryId), ($"@ev{i}", a.EventId), ($"@et{i}", a.EventType), ($"@m{i}", a.MemberId),
                    ($"@a{i}", a.Attempt), ($"@at{i}", ToDb(a.At)), ($"@sc{i}", a.StatusCode), ($"@ms{i}", a.LatencyMs),
                    ($"@er{i}", OrNull(a.Error)), ($"@man{i}", a.Manual)]);
            }

            await using DbCommand insert = Command(transaction,
                "INSERT INTO webhook_attempts (program_id, webhook_id, delivery_id, event_id, event_type, member_id, attempt, at, " +
                $"status_code, latency_ms, error, manual) VALUES {values};", [.. parameters]);
            await insert.ExecuteNonQueryAsync(cancellationToken);
        }
    }

    private async Task<List<WebhookRow>> ReadWebhooksAsync(DbCommand command, CancellationToken cancellationToken)
    {
        await using DbDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        var rows = new List<WebhookRow>();
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(ReadWebhook(reader));
        }

        return rows;
    }

    private WebhookRow ReadWebhook(DbDataReader r) => new(
        r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt32(5),
        StringOrNull(r, 6), FromDbOrNull(r, 7), r.GetBoolean(8), StringOrNull(r, 9), FromDbOrNull(r, 10),
        r.GetString(11), FromDb(r, 12), FromDb(r, 13));

    private WebhookAttemptRow ReadAttempt(DbDataReader r) => new(
        r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetString(5), r.GetString(6),
        r.GetInt32(7), FromDb(r, 8), r.GetInt32(9), r.GetInt32(10), StringOrNull(r, 11), r.GetBoolean(12));

    private object ToDbOrNull(DateTimeOffset? value) => value is { } time ? ToDb(time) : DBNull.Value;

    private DateTimeOffset? FromDbOrNull(DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : FromDb(reader, ordinal);

    private static object OrNull(string? value) => value is null ? DBNull.Value : value;

    private static string? StringOrNull(DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);
}

/// <summary>The webhook store in PostgreSQL (timestamptz; several nodes share it).</summary>
public sealed class PostgresWebhookStore(string connectionString) : SqlWebhookStore, IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource = NpgsqlDataSource.Create(connectionString);

    /// <inheritdoc />
    /// <remarks>
    /// The candidates are locked as they are chosen, skipping rows another node is claiming this
    /// moment instead of waiting for them; a row that node has claimed and committed meanwhile is
    /// re-checked under the lock, no longer matches and is left out. So two nodes never both get
    /// one subscription.
    /// </remarks>
    protected override string ClaimSql =>
        "UPDATE webhooks SET lease_owner = @o, lease_until = @until WHERE (program_id, webhook_id) IN (" +
        "SELECT program_id, webhook_id FROM webhooks WHERE enabled AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @o) " +
        "ORDER BY (lease_owner IS NOT DISTINCT FROM @o), lease_until ASC NULLS FIRST, program_id, webhook_id LIMIT @l FOR UPDATE SKIP LOCKED) " +
        $"RETURNING {WebhookColumns};";

    /// <inheritdoc />
    /// <remarks>
    /// KEY SHARE conflicts only with a delete (or a key change) of the subscription, not with the
    /// progress and configuration updates, so appends wait for nothing else.
    /// </remarks>
    protected override string AppendLockSql => " FOR KEY SHARE";

    /// <inheritdoc />
    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await _dataSource.OpenConnectionAsync(cancellationToken);

    /// <inheritdoc />
    protected override object ToDb(DateTimeOffset value) => value.UtcDateTime;

    /// <inheritdoc />
    protected override DateTimeOffset FromDb(DbDataReader reader, int ordinal) => new(reader.GetDateTime(ordinal), TimeSpan.Zero);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();
}

/// <summary>The webhook store in the SQLite file of the ledger (microseconds since the Unix epoch).</summary>
public sealed class SqliteWebhookStore(string connectionString) : SqlWebhookStore
{
    /// <inheritdoc />
    /// <remarks>
    /// One statement: SQLite serializes writers on the file, so the choice and the update happen
    /// with no other claim in between.
    /// </remarks>
    protected override string ClaimSql =>
        "UPDATE webhooks SET lease_owner = @o, lease_until = @until WHERE (program_id, webhook_id) IN (" +
        "SELECT program_id, webhook_id FROM webhooks WHERE enabled AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @o) " +
        "ORDER BY (lease_owner IS @o), lease_until ASC NULLS FIRST, program_id, webhook_id LIMIT @l) " +
        $"RETURNING {WebhookColumns};";

    /// <inheritdoc />
    /// <remarks>Writers are serialized on the file, so an append and a delete never interleave.</remarks>
    protected override string AppendLockSql => "";

    /// <inheritdoc />
    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await SqliteConnections.OpenAsync(connectionString, cancellationToken);

    /// <inheritdoc />
    protected override object ToDb(DateTimeOffset value) => UnixMicros.From(value);

    /// <inheritdoc />
    protected override DateTimeOffset FromDb(DbDataReader reader, int ordinal) => UnixMicros.To(reader.GetInt64(ordinal));
}
