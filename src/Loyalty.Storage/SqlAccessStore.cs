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

    /// <inheritdoc />
    public async Task<bool> TryInsertKeyAsync(AccessKeyRow key, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using DbCommand command = Command(connection,
            $"INSERT INTO access_keys ({KeyColumns}, changed_at) VALUES (@k, @p, @s, @st, @n, @h, @c, @cb, @e, NULL, {NowSql}) " +
            "ON CONFLICT (key_id) DO NOTHING;",
            ("@k", key.KeyId), ("@p", key.ProgramId), ("@s", key.Scope), ("@st", key.StoreIds), ("@n", key.Name),
            ("@h", key.SecretSha256), ("@c", ToDb(key.CreatedAt)), ("@cb", key.CreatedBy),
            ("@e", key.ExpiresAt is { } expires ? ToDb(expires) : DBNull.Value));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    /// <inheritdoc />
    public async Task<AccessKeyRow?> RevokeKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using DbConnection connection = await OpenAsync(cancellationToken);
        await using (DbCommand revoke = Command(connection,
            $"UPDATE access_keys SET revoked_at = @r, changed_at = {NowSql} WHERE key_id = @k AND revoked_at IS NULL;",
            ("@k", keyId), ("@r", ToDb(at))))
        {
            await revoke.ExecuteNonQueryAsync(cancellationToken);
        }

        await using DbCommand select = Command(connection, $"SELECT {KeyColumns} FROM access_keys WHERE key_id = @k;", ("@k", keyId));
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
    protected override DateTimeOffset FromDb(DbDataReader reader, int ordinal) => UnixMicros.To(reader.GetInt64(ordinal));
}
