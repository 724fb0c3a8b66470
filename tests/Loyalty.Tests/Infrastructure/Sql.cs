using Loyalty.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Direct SQL against a test database, for arranging faults and checking rows.</summary>
public static class Sql
{
    public static async Task<long> ScalarAsync(StorageOptions storage, string sql)
    {
        if (storage.Provider == StorageProvider.Sqlite)
        {
            await using var connection = new SqliteConnection(storage.ConnectionString);
            await connection.OpenAsync();
            await using SqliteCommand command = connection.CreateCommand();
            command.CommandText = sql;
            return Convert.ToInt64(await command.ExecuteScalarAsync() ?? 0L, System.Globalization.CultureInfo.InvariantCulture);
        }

        await using var pg = new NpgsqlConnection(storage.ConnectionString);
        await pg.OpenAsync();
        await using var pgCommand = new NpgsqlCommand(sql, pg);
        object? value = await pgCommand.ExecuteScalarAsync();
        return value is null or DBNull ? 0 : Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture);
    }

    public static Task ExecuteAsync(StorageOptions storage, string sql) => ScalarAsync(storage, sql);

    /// <summary>Ledger entries of a member (all kinds).</summary>
    public static Task<long> CountEntriesAsync(StorageOptions storage, string program, string member) =>
        ScalarAsync(storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{program}' AND member_id = '{member}'");

    /// <summary>The sum of a member's ledger points.</summary>
    public static Task<long> SumPointsAsync(StorageOptions storage, string program, string member) =>
        ScalarAsync(storage, $"SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE program_id = '{program}' AND member_id = '{member}'");
}
