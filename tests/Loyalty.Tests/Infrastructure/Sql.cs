using System.Data.Common;
using System.Globalization;
using Loyalty.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Direct SQL against a test database, for arranging faults and checking rows.</summary>
public static class Sql
{
    public static async Task<DbConnection> OpenAsync(StorageOptions storage)
    {
        DbConnection connection = storage.Provider == StorageProvider.Sqlite
            ? new SqliteConnection(storage.ConnectionString)
            : new NpgsqlConnection(storage.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    public static async Task<long> ScalarAsync(StorageOptions storage, string sql)
    {
        await using DbConnection connection = await OpenAsync(storage);
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        object? value = await command.ExecuteScalarAsync();
        return value is null or DBNull ? 0 : Convert.ToInt64(value, CultureInfo.InvariantCulture);
    }

    /// <summary>Runs every statement of <paramref name="sql"/>.</summary>
    public static async Task ExecuteAsync(StorageOptions storage, string sql)
    {
        await using DbConnection connection = await OpenAsync(storage);
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Every row of a query, mapped by <paramref name="map"/>.</summary>
    public static async Task<List<T>> RowsAsync<T>(StorageOptions storage, string sql, Func<DbDataReader, T> map)
    {
        await using DbConnection connection = await OpenAsync(storage);
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        await using DbDataReader reader = await command.ExecuteReaderAsync();
        var rows = new List<T>();
        while (await reader.ReadAsync())
        {
            rows.Add(map(reader));
        }

        return rows;
    }

    /// <summary>Ledger entries of a member (all kinds).</summary>
    public static Task<long> CountEntriesAsync(StorageOptions storage, string program, string member) =>
        ScalarAsync(storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{program}' AND member_id = '{member}'");

    /// <summary>The sum of a member's ledger points.</summary>
    public static Task<long> SumPointsAsync(StorageOptions storage, string program, string member) =>
        ScalarAsync(storage, $"SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE program_id = '{program}' AND member_id = '{member}'");
}
