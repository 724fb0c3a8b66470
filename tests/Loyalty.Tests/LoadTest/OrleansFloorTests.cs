using System.Globalization;
using System.Text.Json;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.LoadTest;

/// <summary>The Orleans floor benchmark runs as a user would start it and reports what it measured.</summary>
public sealed class OrleansFloorTests
{
    [Fact]
    public async Task ASmallRun_ReportsLatencyCollectionsAndBytesPerCall_AndKeepsIdsAndWaitsWhenAsked()
    {
        JsonElement kept = await RunAsync("--activations", "500", "--rate", "400", "--duration", "2", "--garbage", "4096", "--keep-id", "--await-once");
        JsonElement bare = await RunAsync("--activations", "200", "--rate", "200", "--duration", "1");

        Assert.Equal(500, kept.GetProperty("activations").GetInt32());
        Assert.True(kept.GetProperty("latency_ms").GetProperty("p50").GetDouble() > 0);
        Assert.True(kept.GetProperty("latency_ms").GetProperty("max").GetDouble() >= kept.GetProperty("latency_ms").GetProperty("p99").GetDouble());
        Assert.True(kept.GetProperty("gc").GetProperty("pause_ms").GetDouble() >= 0);
        Assert.True(kept.GetProperty("kept_id").GetBoolean());
        Assert.False(bare.GetProperty("kept_id").GetBoolean());
        Assert.True(kept.GetProperty("await_once").GetBoolean());
        Assert.False(bare.GetProperty("await_once").GetBoolean());
        // Every call of the first run waited once (800 calls, and the warm-up's 500); none of the second.
        Assert.True(kept.GetProperty("waits").GetInt64() >= 800);
        Assert.Equal(0, bare.GetProperty("waits").GetInt64());
        Assert.True(kept.GetProperty("pacing_bytes_per_call").GetDouble() >= 0);

        // What a call allocates besides the garbage asked for and the pacing: Orleans' message, callback,
        // tasks and the calling state machine. Positive, and not the garbage counted in (4,096 bytes a
        // call in the first run, which also makes an id string a call).
        double keptBytes = kept.GetProperty("allocated_bytes_per_call").GetDouble();
        double bareBytes = bare.GetProperty("allocated_bytes_per_call").GetDouble();
        Assert.InRange(bareBytes, 100, 4000);
        Assert.InRange(keptBytes, 100, 4000);
    }

    public static TheoryData<Backend, bool> LedgerRuns => new()
    {
        { Backend.Sqlite, false },
        { Backend.Sqlite, true },
        { Backend.Postgres, false },
        { Backend.Postgres, true },
    };

    [Theory, MemberData(nameof(LedgerRuns))]
    public async Task WithALedger_EveryCallCommitsOneEntry_AndEachMembersEntriesAreNumberedWithoutGaps(Backend backend, bool direct)
    {
        StorageOptions storage = TestDatabases.Create(backend, "floor");
        string[] args = ["--activations", "300", "--rate", "300", "--duration", "2",
            "--ledger", backend == Backend.Sqlite ? "sqlite" : "postgres", "--ledger-connection", storage.ConnectionString];

        JsonElement run = await RunAsync(direct ? [.. args, "--direct"] : args);

        Assert.Equal(backend == Backend.Sqlite ? "sqlite" : "postgres", run.GetProperty("ledger").GetString());
        Assert.Equal(direct, run.GetProperty("direct").GetBoolean());
        Assert.True(run.GetProperty("latency_ms").GetProperty("p50").GetDouble() > 0);
        // One entry per member before the clock starts (300, not counted), then one per call (600),
        // each waited for (the grain's answers count the warm-up's too).
        Assert.Equal(600, run.GetProperty("ledger_entries_committed").GetInt64());
        Assert.InRange(run.GetProperty("ledger_batches_committed").GetInt64(), 1, 600);
        Assert.Equal(direct ? 0 : 900, run.GetProperty("waits").GetInt64());
        Assert.Equal(900, await Sql.ScalarAsync(storage, "SELECT count(*) FROM ledger_entries"));
        Assert.Equal(300, await Sql.ScalarAsync(storage, "SELECT count(DISTINCT member_id) FROM ledger_entries"));
        Assert.Equal(900, await Sql.ScalarAsync(storage, "SELECT count(DISTINCT txn_id) FROM ledger_entries"));
        // Each member's entries are 1..n: as many as its highest number, and none below 1.
        Assert.Equal(0, await Sql.ScalarAsync(storage,
            "SELECT count(*) FROM (SELECT member_id FROM ledger_entries GROUP BY member_id HAVING count(*) <> max(seq) OR min(seq) <> 1) AS gaps"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task WithAFileLedger_EveryCallWaitsForASync_AndTheSyncsAreReported(bool direct)
    {
        string[] args = ["--activations", "300", "--rate", "300", "--duration", "2", "--ledger", "file"];

        JsonElement run = await RunAsync(direct ? [.. args, "--direct"] : args);

        Assert.Equal("file", run.GetProperty("ledger").GetString());
        Assert.Equal(600, run.GetProperty("ledger_entries_committed").GetInt64());
        Assert.Equal(direct ? 0 : 900, run.GetProperty("waits").GetInt64());
        // One sync per batch: at least one, at most one per entry.
        Assert.InRange(run.GetProperty("ledger_batches_committed").GetInt64(), 1, 600);
        JsonElement sync = run.GetProperty("ledger_sync_ms");
        Assert.True(sync.GetProperty("p50").GetDouble() > 0);
        Assert.True(sync.GetProperty("max").GetDouble() >= sync.GetProperty("p99").GetDouble());
        Assert.True(sync.GetProperty("p99").GetDouble() >= sync.GetProperty("p50").GetDouble());
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("file")]
    public async Task ALedgerTheRunMakesItself_LeavesNothingInTheTemporaryFolder(string ledger)
    {
        string temporary = TestDatabases.TempFolder();

        JsonElement run = await RunAsync(new Dictionary<string, string> { ["TMPDIR"] = temporary },
            "--activations", "100", "--rate", "200", "--duration", "1", "--ledger", ledger, "--direct");

        Assert.Equal(200, run.GetProperty("ledger_entries_committed").GetInt64());
        Assert.Empty(Directory.EnumerateFileSystemEntries(temporary));
    }

    [Fact]
    public async Task WithoutAFileLedger_NoSyncsAreReported()
    {
        JsonElement run = await RunAsync("--activations", "50", "--rate", "100", "--duration", "1");

        Assert.Equal("none", run.GetProperty("ledger").GetString());
        Assert.Equal(JsonValueKind.Null, run.GetProperty("ledger_sync_ms").ValueKind);
        Assert.Equal(0, run.GetProperty("ledger_entries_committed").GetInt64());
    }

    [Fact]
    public async Task AnUnknownOption_FailsNamingIt()
    {
        (int exit, string output) = await StartAsync(["--activations", "10", "--frobnicate"]);

        Assert.NotEqual(0, exit);
        Assert.Contains("--frobnicate", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--direct", "--direct and --ledger-connection need --ledger")]
    [InlineData("--ledger postgres", "--ledger postgres needs --ledger-connection")]
    [InlineData("--ledger mysql", "--ledger needs sqlite, postgres or file")]
    [InlineData("--ledger file --ledger-connection /no/such/folder", "--ledger file takes a folder")]
    [InlineData("--ledger sqlite --await-once", "--await-once and --ledger both make the grain wait")]
    [InlineData("--ledger sqlite --direct --keep-id", "--direct calls no grain")]
    public async Task ALedgerOptionThatCannotWork_FailsSayingWhy_BeforeAnythingRuns(string options, string message)
    {
        (int exit, string output) = await StartAsync(["--activations", "10", .. options.Split(' ')]);

        Assert.NotEqual(0, exit);
        Assert.Contains(message, output, StringComparison.Ordinal);
    }

    private static Task<JsonElement> RunAsync(params string[] args) => RunAsync(new Dictionary<string, string>(), args);

    private static async Task<JsonElement> RunAsync(Dictionary<string, string> environment, params string[] args)
    {
        (int exit, string output) = await StartAsync(args, environment);
        Assert.True(exit == 0, output);
        string json = output.Split('\n').Last(l => l.StartsWith('{'));
        return JsonDocument.Parse(json).RootElement;
    }

    private static Task<(int Exit, string Output)> StartAsync(string[] args, Dictionary<string, string>? environment = null) =>
        LoadTools.RunAsync("Loyalty.OrleansFloor",
            args.Concat(["--silo-port", Ports.Free().ToString(CultureInfo.InvariantCulture), "--gateway-port", Ports.Free().ToString(CultureInfo.InvariantCulture)]),
            environment);
}
