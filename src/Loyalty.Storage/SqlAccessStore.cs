using System.Data.Common;
using static Loyalty.Storage.SqlCommands;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Loyalty.Storage;

/// <summary>
/// <see cref="IAccessStore"/> over SQL. The statements are the same for both databases (both accept
/// <c>@name</c> parameters); the dialects differ in how they open connections, store time and
/// read the database's clock.
/// </summary>
public abstract class SqlAccessStore : IAccessStore
{
    private const string KeyColumns =
        "key_id, program_id, scope, store_ids, name, secret_sha256, created_at, created_by, expires_at, revoked_at";

    private const string AuditColumns = "id, program_id, at, key_id, method, target, outcome";

    /// <summary>An SQL expression for the database's current time, in the dialect's time representation.</summary>
    protected abstract string NowSql { get; }

    /// <summary>Opens a connection.</summary>
    protected abstract Task<DbConnection> OpenAsync(CancellationToken cancellationToken);

    /// <summary>A time as the dialect stores it.</summary>
    protected abstract object ToDb(DateTimeOffset value);

    /// <summary>A stored time back.</summary>
    protected abstract DateTimeOffset FromDb(DbDataReader reader, int ordinal);

    /// <summary>
    /// Begins a transaction in which key changes are serialized against every other connection's:
    /// the checks of a key's insert or revocation and the change itself see the same keys.
    /// </summary>
    protected abstract Task<DbTransaction> BeginKeyChangeAsync(DbConnection connection, CancellationToken cancellationToken);

    /// <inheritdoc />
    public async Task<KeyInsert> InsertKeyAsync(AccessKeyRow key, KeyAllowance? allowance, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbTransaction transaction = await BeginKeyChangeAsync(connection, cancellationToken);
        KeyInsert outcome = await ExistsAsync(transaction, key.KeyId, cancellationToken) ? KeyInsert.IdTaken
            : allowance is null ? KeyInsert.Inserted
            : await CountActiveAsync(transaction, key.ProgramId, null, allowance.Now, cancellationToken) >= allowance.ActiveMax ? KeyInsert.TooManyActive
            : allowance.CreatedMax < int.MaxValue && await CountCreatedSinceAsync(transaction, key.ProgramId, allowance.CreatedSince, cancellationToken) >= allowance.CreatedMax
                ? KeyInsert.TooManyCreated
            : KeyInsert.Inserted;
        if (outcome != KeyInsert.Inserted)
        {
            return outcome;
        }

        await using (DbCommand command = Command(transaction,
            $"INSERT INTO access_keys ({KeyColumns}, changed_at) VALUES (@k, @p, @s, @st, @n, @h, @c, @cb, @e, NULL, {NowSql});",
            ("@k", key.KeyId), ("@p", key.ProgramId), ("@s", key.Scope), ("@st", key.StoreIds), ("@n", key.Name),
            ("@h", key.SecretSha256), ("@c", ToDb(key.CreatedAt)), ("@cb", key.CreatedBy),
            ("@e", key.ExpiresAt is { } expires ? ToDb(expires) : DBNull.Value)))
        {
            await command.ExecuteNonQueryAsync(cancellationToken);
        }

        // Not cancelled by the caller once the change is decided: a commit the server made while the
        // call answered CANCELLED would store a key whose secret reached nobody.
        await transaction.CommitAsync(CancellationToken.None);
        return KeyInsert.Inserted;
    }

    /// <inheritdoc />
    public async Task<KeyRevocation> RevokeKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbTransaction transaction = await BeginKeyChangeAsync(connection, cancellationToken);
        AccessKeyRow? key = await ReadKeyAsync(transaction, keyId, cancellationToken);
        if (key is null || key.RevokedAt is not null)
        {
            return new KeyRevocation(key, LastOperatorKey: false);
        }

        // Operator keys are the keys of no program. Another counts only if it still works a while
        // from now (see OperatorKeyLeftMargin): one about to expire would leave nobody in.
        if (key.ProgramId.Length == 0 && !(key.ExpiresAt <= at)
            && await CountActiveAsync(transaction, "", keyId, at + IAccessStore.OperatorKeyLeftMargin, cancellationToken) == 0)
        {
            return new KeyRevocation(key, LastOperatorKey: true);
        }

        await using (DbCommand revoke = Command(transaction,
            $"UPDATE access_keys SET revoked_at = @r, changed_at = {NowSql} WHERE key_id = @k;", ("@k", keyId), ("@r", ToDb(at))))
        {
            await revoke.ExecuteNonQueryAsync(cancellationToken);
        }

        AccessKeyRow? revoked = await ReadKeyAsync(transaction, keyId, cancellationToken);
        await transaction.CommitAsync(CancellationToken.None);
        return new KeyRevocation(revoked, LastOperatorKey: false);
    }

    private static async Task<bool> ExistsAsync(DbTransaction transaction, string keyId, CancellationToken cancellationToken)
    {
        await using DbCommand command = Command(transaction, "SELECT 1 FROM access_keys WHERE key_id = @k;", ("@k", keyId));
        return await command.ExecuteScalarAsync(cancellationToken) is not null;
    }

    /// <summary>Keys of a program that work at <paramref name="now"/>, but for <paramref name="exceptKeyId"/>.</summary>
    private async Task<long> CountActiveAsync(DbTransaction transaction, string programId, string? exceptKeyId, DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using DbCommand command = Command(transaction,
            "SELECT COUNT(*) FROM access_keys WHERE program_id = @p AND key_id <> @x AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > @n);",
            ("@p", programId), ("@x", exceptKeyId ?? ""), ("@n", ToDb(now)));
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task<long> CountCreatedSinceAsync(DbTransaction transaction, string programId, DateTimeOffset since, CancellationToken cancellationToken)
    {
        await using DbCommand command = Command(transaction,
            "SELECT COUNT(*) FROM access_keys WHERE program_id = @p AND created_at >= @s;", ("@p", programId), ("@s", ToDb(since)));
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task<AccessKeyRow?> ReadKeyAsync(DbTransaction transaction, string keyId, CancellationToken cancellationToken)
    {
        await using DbCommand select = Command(transaction, $"SELECT {KeyColumns} FROM access_keys WHERE key_id = @k;", ("@k", keyId));
        await using DbDataReader reader = await select.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadKey(reader) : null;
    }

    /// <inheritdoc />
    public async Task<int> ClearKeysEndedBeforeAsync(DateTimeOffset before, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand clear = Command(connection,
            "UPDATE access_keys SET name = '', store_ids = '' WHERE (revoked_at < @b OR expires_at < @b) AND (name <> '' OR store_ids <> '');",
            ("@b", ToDb(before)));
        return await clear.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<(IReadOnlyList<AccessKeyRow> Keys, DateTimeOffset DatabaseNow)> ReadKeysChangedSinceAsync(DateTimeOffset? since, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        DateTimeOffset now;
        await using (DbCommand clock = Command(connection, $"SELECT {NowSql};"))
        await using (DbDataReader reader = await clock.ExecuteReaderAsync(cancellationToken))
        {
            await reader.ReadAsync(cancellationToken);
            now = FromDb(reader, 0);
        }

        var keys = new List<AccessKeyRow>();
        await using DbCommand select = since is { } from
            ? Command(connection, $"SELECT {KeyColumns} FROM access_keys WHERE changed_at >= @since;", ("@since", ToDb(from)))
            : Command(connection, $"SELECT {KeyColumns} FROM access_keys;");
        await using DbDataReader rows = await select.ExecuteReaderAsync(cancellationToken);
        while (await rows.ReadAsync(cancellationToken))
        {
            keys.Add(ReadKey(rows));
        }

        return (keys, now);
    }

    /// <inheritdoc />
    public async Task<long> AppendAuditAsync(AuditRow record, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            "INSERT INTO audit_log (program_id, at, key_id, method, target, outcome) VALUES (@p, @a, @k, @m, @t, @o) RETURNING id;",
            ("@p", record.ProgramId), ("@a", ToDb(record.At)), ("@k", record.KeyId), ("@m", record.Method),
            ("@t", record.Target), ("@o", record.Outcome));
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <inheritdoc />
    public async Task CompleteAuditAsync(long id, string outcome, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection, "UPDATE audit_log SET outcome = @o WHERE id = @i;", ("@o", outcome), ("@i", id));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<AuditRow>> ReadAuditAsync(string programId, long beforeId, int limit, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"SELECT {AuditColumns} FROM audit_log WHERE program_id = @p AND id < @b ORDER BY id DESC LIMIT @l;",
            ("@p", programId), ("@b", beforeId), ("@l", limit));
        await using DbDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        var records = new List<AuditRow>();
        while (await reader.ReadAsync(cancellationToken))
        {
            records.Add(new AuditRow(reader.GetInt64(0), reader.GetString(1), FromDb(reader, 2), reader.GetString(3),
                reader.GetString(4), reader.GetString(5), reader.GetString(6)));
        }

        return records;
    }

    private AccessKeyRow ReadKey(DbDataReader r) => new(
        r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetString(5),
        FromDb(r, 6), r.GetString(7),
        r.IsDBNull(8) ? null : FromDb(r, 8),
        r.IsDBNull(9) ? null : FromDb(r, 9));
}

/// <summary>The access store in PostgreSQL (timestamptz, the server's clock).</summary>
public sealed class PostgresAccessStore(string connectionString) : SqlAccessStore, IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource = NpgsqlDataSource.Create(connectionString);

    /// <inheritdoc />
    protected override string NowSql => "statement_timestamp()";

    /// <inheritdoc />
    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await _dataSource.OpenConnectionAsync(cancellationToken);

    /// <inheritdoc />
    protected override object ToDb(DateTimeOffset value) => value.UtcDateTime;

    /// <summary>
    /// The advisory lock every key change takes (one for all programs: keys change a few times a
    /// day, and a single lock also covers the operator keys, which belong to no program).
    /// </summary>
    private const long KeyChangeLockKey = 0x4C47_4B45_5953; // "LGKEYS"

    /// <inheritdoc />
    protected override async Task<DbTransaction> BeginKeyChangeAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        // Read committed, whatever the server's default: each statement after the lock then sees
        // every change committed before it (a repeatable-read snapshot would be taken by the lock's
        // own statement, before the lock is granted).
        DbTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted, cancellationToken);
        try
        {
            await using DbCommand command = Command(transaction, $"SELECT pg_advisory_xact_lock({KeyChangeLockKey});");
            await command.ExecuteNonQueryAsync(cancellationToken);
            return transaction;
        }
        catch
        {
            await transaction.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc />
    protected override DateTimeOffset FromDb(DbDataReader reader, int ordinal) => new(reader.GetDateTime(ordinal), TimeSpan.Zero);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();
}

/// <summary>The access store in the SQLite file of the ledger (microseconds since the Unix epoch).</summary>
public sealed class SqliteAccessStore(string connectionString) : SqlAccessStore
{
    /// <inheritdoc />
    protected override string NowSql => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

    /// <inheritdoc />
    protected override async Task<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
        await SqliteConnections.OpenAsync(connectionString, cancellationToken);

    /// <inheritdoc />
    protected override object ToDb(DateTimeOffset value) => UnixMicros.From(value);

    /// <inheritdoc />
    protected override Task<DbTransaction> BeginKeyChangeAsync(DbConnection connection, CancellationToken cancellationToken) =>
        // BEGIN IMMEDIATE: the file's write lock is taken before the first read, so no other
        // connection writes between the checks and the change.
        Task.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: false));

    /// <inheritdoc />
    protected override DateTimeOffset FromDb(DbDataReader reader, int ordinal) => UnixMicros.To(reader.GetInt64(ordinal));
}
