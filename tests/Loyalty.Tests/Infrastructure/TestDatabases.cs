using Loyalty.Storage;
using Npgsql;

namespace Loyalty.Tests.Infrastructure;

/// <summary>The two backends every storage-facing test runs against.</summary>
public enum Backend
{
    Sqlite,
    Postgres,
}

/// <summary>
/// Creates throw-away databases: a fresh SQLite file in a temp folder, or a fresh database on the
/// PostgreSQL server named by LOYALTY_TEST_POSTGRES (set by ./test.sh). Without that variable a
/// PostgreSQL test fails loudly instead of skipping.
/// </summary>
public static class TestDatabases
{
    public const string PostgresVariable = "LOYALTY_TEST_POSTGRES";

    public static StorageOptions Create(Backend backend, string name) => backend switch
    {
        Backend.Sqlite => new StorageOptions
        {
            Provider = StorageProvider.Sqlite,
            ConnectionString = $"Data Source={Path.Combine(TempFolder(), name + ".db")}",
        },
        Backend.Postgres => new StorageOptions
        {
            Provider = StorageProvider.Postgres,
            ConnectionString = CreatePostgresDatabase(name),
        },
        _ => throw new ArgumentOutOfRangeException(nameof(backend)),
    };

    public static string TempFolder()
    {
        string folder = Path.Combine(Path.GetTempPath(), "loyalty-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return folder;
    }

    public static string PostgresServer() =>
        Environment.GetEnvironmentVariable(PostgresVariable) is { Length: > 0 } server
            ? server
            : throw new InvalidOperationException(
                $"{PostgresVariable} is not set. Run the tests with ./test.sh, which starts a PostgreSQL server, or set it to a connection string of a server where the user may create databases.");

    private static string CreatePostgresDatabase(string name)
    {
        string database = ("lt_" + name + "_" + Guid.NewGuid().ToString("N")[..8]).ToLowerInvariant();
        var builder = new NpgsqlConnectionStringBuilder(PostgresServer());
        using (var connection = new NpgsqlConnection(builder.ConnectionString))
        {
            connection.Open();
            using var command = new NpgsqlCommand($"CREATE DATABASE \"{database}\"", connection);
            command.ExecuteNonQuery();
        }

        builder.Database = database;
        builder.Pooling = true;
        // Every test class has databases of its own, and a pool's idle connections stay open for
        // minutes by default: closed sooner, the ones of classes that have finished do not add up
        // to the server's limit while later classes open theirs (a CI run was refused "too many clients").
        builder.ConnectionIdleLifetime = 10;
        builder.ConnectionPruningInterval = 2;
        return builder.ConnectionString;
    }
}
