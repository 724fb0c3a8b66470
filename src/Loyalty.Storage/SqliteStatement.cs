using System.Buffers;
using System.Text;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Loyalty.Storage;

/// <summary>
/// A statement of the writer's, prepared once on its connection and run through SQLite's C API.
/// Microsoft.Data.Sqlite's command makes a data reader, finds each parameter by name and binds it
/// through a new object on every execution; the writer runs its statements for every batch, a few
/// rows each when purchases arrive at a steady rate, so that was several objects per purchase.
/// Here binding copies each value into SQLite's own statement, with no object per parameter (text
/// given as a string is encoded to UTF-8 on the stack or in a pooled array). The writer's statements run inside
/// its transaction, begun with BEGIN IMMEDIATE (<see cref="SqliteWriter"/>): the write lock is
/// taken (waiting in the engine's busy handler, <see cref="SqliteBusyWait"/>) before the first statement, which therefore never
/// waits for another writer.
/// </summary>
internal sealed class SqliteStatement : IDisposable
{
    private readonly sqlite3 _db;
    private readonly sqlite3_stmt _statement;

    /// <summary>Prepares <paramref name="sql"/>, which must have exactly <paramref name="parameterCount"/> parameters.</summary>
    public SqliteStatement(SqliteConnection connection, string sql, int parameterCount)
    {
        _db = connection.Handle ?? throw new InvalidOperationException("The writer's connection is not open.");
        Check(raw.sqlite3_prepare_v2(_db, sql, out _statement));
        if (raw.sqlite3_bind_parameter_count(_statement) != parameterCount)
        {
            _statement.Dispose();
            throw new InvalidOperationException($"The statement must have {parameterCount} parameters: {sql}");
        }
    }

    /// <summary>
    /// Empty text, zero-terminated: an empty span has no address and would bind as NULL, and
    /// binding the empty string makes a new array for its terminator every time.
    /// </summary>
    private static readonly byte[] EmptyText = [0];

    /// <summary>
    /// Text whose UTF-8 may take up to this many bytes (by the encoder's worst case, 3 per
    /// character and 3 more: about 170 characters) is encoded on the stack; longer text in a pooled array.
    /// </summary>
    private const int StackTextBytesMax = 512;

    /// <summary>
    /// Binds parameter <paramref name="index"/> (from 1) to text, or to NULL. The text is encoded
    /// to UTF-8 here, on the stack or in a pooled array, and SQLite copies it, so no array is made
    /// per value. Not bound as UTF-16: SQLite would take a leading U+FEFF or U+FFFE as a byte-order
    /// mark and drop or swap the text, and would convert an unpaired surrogate differently from
    /// .NET's encoder (which writes U+FFFD, as PostgreSQL's driver does).
    /// </summary>
    public void Text(int index, string? value)
    {
        if (value is null || value.Length == 0)
        {
            Check(value is null ? raw.sqlite3_bind_null(_statement, index) : BindEmpty(index));
            return;
        }

        int bytesMax = Encoding.UTF8.GetMaxByteCount(value.Length);
        byte[]? rented = bytesMax > StackTextBytesMax ? ArrayPool<byte>.Shared.Rent(bytesMax) : null;
        try
        {
            Span<byte> buffer = rented ?? stackalloc byte[StackTextBytesMax];
            int length = Encoding.UTF8.GetBytes(value, buffer);
            Check(raw.sqlite3_bind_text(_statement, index, buffer[..length]));
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// Binds parameter <paramref name="index"/> (from 1) to text already encoded as UTF-8, or to
    /// NULL when there is none (JSON, the only such text, is never empty). SQLite copies it.
    /// </summary>
    public void Utf8OrNull(int index, ReadOnlySpan<byte> value) =>
        Check(value.IsEmpty ? raw.sqlite3_bind_null(_statement, index) : raw.sqlite3_bind_text(_statement, index, value));

    private int BindEmpty(int index) => raw.sqlite3_bind_text(_statement, index, utf8z.FromSpan(EmptyText));

    /// <summary>Binds parameter <paramref name="index"/> (from 1) to an integer.</summary>
    public void Integer(int index, long value) => Check(raw.sqlite3_bind_int64(_statement, index, value));

    /// <summary>Binds parameter <paramref name="index"/> (from 1) to an integer, or to NULL.</summary>
    public void Integer(int index, long? value) =>
        Check(value is { } v ? raw.sqlite3_bind_int64(_statement, index, v) : raw.sqlite3_bind_null(_statement, index));

    /// <summary>Runs the statement with the values bound; the number of rows it changed.</summary>
    public int Run()
    {
        int stepped = raw.sqlite3_step(_statement);
        int reset = raw.sqlite3_reset(_statement);
        if (stepped != raw.SQLITE_DONE)
        {
            Check(stepped);
            Check(reset);
        }

        return raw.sqlite3_changes(_db);
    }

    /// <inheritdoc />
    public void Dispose() => _statement.Dispose();

    private void Check(int result)
    {
        if (result is not raw.SQLITE_OK and not raw.SQLITE_DONE and not raw.SQLITE_ROW)
        {
            SqliteException.ThrowExceptionForRC(result, _db);
        }
    }
}
