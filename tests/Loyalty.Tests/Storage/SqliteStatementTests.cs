using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace Loyalty.Tests.Storage;

/// <summary>The writer's prepared statements bind text as it was given: NULL, empty, and every character.</summary>
public sealed class SqliteStatementTests
{
    [Theory]
    [InlineData("m-1")]
    [InlineData("")]
    [InlineData("Zoë Ødegård, 東京店, 🎉 and a NUL \0 inside")]
    [InlineData("\uFEFFleading byte-order mark")]
    [InlineData("\uFFFEab, a swapped one")]
    public async Task Text_BindsTheString_ReadBackTheSame(string value)
    {
        await using SqliteConnection connection = await OpenWithTableAsync("text");
        using (var insert = new SqliteStatement(connection, "INSERT INTO t (v, u) VALUES (?1, ?2);", 2))
        {
            insert.Text(1, value);
            insert.Utf8OrNull(2, System.Text.Encoding.UTF8.GetBytes(value));
            Assert.Equal(1, insert.Run());
        }

        (object text, object utf8) = await ReadAsync(connection);

        Assert.Equal(value, text);
        // Encoded text is JSON, never empty: no bytes bind as NULL (an entry without details).
        Assert.Equal(value.Length == 0 ? DBNull.Value : value, utf8);
    }

    [Fact]
    public async Task LongText_PastTheStacksBytes_ReadsBackTheSame()
    {
        string value = string.Concat(Enumerable.Repeat("東京店 🎉 ", 200));
        await using SqliteConnection connection = await OpenWithTableAsync("long");
        using (var insert = new SqliteStatement(connection, "INSERT INTO t (v, u) VALUES (?1, ?2);", 2))
        {
            insert.Text(1, value);
            insert.Utf8OrNull(2, null);
            insert.Run();
        }

        Assert.Equal(value, (await ReadAsync(connection)).Text);
    }

    [Fact]
    public async Task AnUnpairedSurrogate_IsStoredAsTheReplacementCharacter_AsUtf8EncodingDoes()
    {
        await using SqliteConnection connection = await OpenWithTableAsync("surrogate");
        using (var insert = new SqliteStatement(connection, "INSERT INTO t (v, u) VALUES (?1, ?2);", 2))
        {
            insert.Text(1, "a\uD800b");
            insert.Utf8OrNull(2, null);
            insert.Run();
        }

        Assert.Equal("a\uFFFDb", (await ReadAsync(connection)).Text);
    }

    [Fact]
    public async Task Null_BindsNull_NotEmptyText()
    {
        await using SqliteConnection connection = await OpenWithTableAsync("null");
        using (var insert = new SqliteStatement(connection, "INSERT INTO t (v, u) VALUES (?1, ?2);", 2))
        {
            insert.Text(1, null);
            insert.Utf8OrNull(2, null);
            insert.Run();
        }

        Assert.Equal((DBNull.Value, DBNull.Value), await ReadAsync(connection));
    }

    [Fact]
    public async Task AStatementRunAgain_BindsTheNewValues_NotTheOldOnes()
    {
        await using SqliteConnection connection = await OpenWithTableAsync("again");
        using (var insert = new SqliteStatement(connection, "INSERT INTO t (v, u) VALUES (?1, ?2);", 2))
        {
            insert.Text(1, "a much longer first value");
            insert.Utf8OrNull(2, [0x61]);
            insert.Run();
            insert.Text(1, "");
            insert.Utf8OrNull(2, []);
            insert.Run();
        }

        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT v, typeof(v), typeof(u) FROM t ORDER BY rowid DESC LIMIT 1;";
        await using SqliteDataReader reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal(("", "text", "null"), (reader.GetString(0), reader.GetString(1), reader.GetString(2)));
    }

    private static async Task<SqliteConnection> OpenWithTableAsync(string name)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, $"statement-{name}");
        SqliteConnection connection = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE t (v TEXT, u TEXT);";
        await command.ExecuteNonQueryAsync();
        return connection;
    }

    private static async Task<(object Text, object Utf8)> ReadAsync(SqliteConnection connection)
    {
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT v, u FROM t;";
        await using SqliteDataReader reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return (reader.GetValue(0), reader.GetValue(1));
    }
}
