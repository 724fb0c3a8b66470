using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using Loyalty.Api;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>
/// An engine the load tester starts itself (--spawn), on free loopback ports, with its data in a
/// fresh temporary folder (SQLite) or the given PostgreSQL; stopped when the run ends.
/// </summary>
internal sealed class EngineProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan ReadyPollInterval = TimeSpan.FromMilliseconds(200);
    private readonly Process _process;
    private readonly string _dataFolder;
    private readonly StreamWriter _log;

    private EngineProcess(Process process, string target, string dataFolder, StreamWriter log, string logPath)
    {
        LogPath = logPath;
        _process = process;
        Target = target;
        _dataFolder = dataFolder;
        _log = log;
    }

    /// <summary>The engine's process id (its garbage collector is watched through it).</summary>
    public int ProcessId => _process.Id;

    /// <summary>The engine's processor time so far, user and system; null once it has exited.</summary>
    public TimeSpan? ProcessorTime
    {
        get
        {
            try
            {
                _process.Refresh();
                return _process.TotalProcessorTime;
            }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // Exited, or reaped between the check and the read of its counters.
                return null;
            }
        }
    }

    /// <summary>The file the engine's output goes to; it stays after the run, for a look.</summary>
    public string LogPath { get; }

    /// <summary>The engine's gRPC address.</summary>
    public string Target { get; }

    /// <summary>The operator key the engine is given (made by this tool, so that it works on a database that already holds keys).</summary>
    public required string OperatorKey { get; init; }

    /// <summary>The engine's peak resident memory so far, in MiB.</summary>
    public double PeakWorkingSetMiB
    {
        get
        {
            _process.Refresh();
            return Math.Round(_process.PeakWorkingSet64 / 1024.0 / 1024.0, 1);
        }
    }

    /// <summary>Starts the engine next to this tool's build and waits until it answers.</summary>
    public static async Task<EngineProcess> StartAsync(string storage, string? postgres, IEnumerable<string> extraArgs, IReadOnlyDictionary<string, string> environment)
    {
        int port = FreePort();
        string data = Path.Combine(Path.GetTempPath(), "loyalty-loadtest-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(data);
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = data };
        info.ArgumentList.Add(storage == LoadOptions.GrpcFloor ? BuiltAssembly("loadtest", "Loyalty.GrpcFloor") : BuiltAssembly("src", "Loyalty.Host"));
        foreach (string arg in Arguments(storage, postgres, port, data).Concat(extraArgs))
        {
            info.ArgumentList.Add(arg);
        }

        foreach ((string name, string value) in environment)
        {
            info.Environment[name] = value;
        }

        string operatorKey = KeyTokens.New().Token;
        info.ArgumentList.Add("--Auth:BootstrapOperatorKey=" + operatorKey);

        Process process = Process.Start(info) ?? throw new InvalidOperationException("The engine did not start.");
        string logPath = data + ".engine.log";
        var log = new StreamWriter(logPath) { AutoFlush = true };
        Console.Error.WriteLine($"loadtest: the engine's log is {logPath}");
        process.OutputDataReceived += (_, e) => Write(log, e.Data);
        process.ErrorDataReceived += (_, e) => Write(log, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var engine = new EngineProcess(process, $"http://127.0.0.1:{port}", data, log, logPath) { OperatorKey = operatorKey };
        await engine.WaitUntilReadyAsync();
        return engine;
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        // Also when it had exited by itself: its last lines (a crash's, say) reach the log before it is closed.
        await _process.WaitForExitAsync();

        _process.Dispose();
        lock (_log)
        {
            // The log file itself stays, for a look after the run.
            _log.Dispose();
        }

        try
        {
            Directory.Delete(_dataFolder, recursive: true);
        }
        catch (IOException)
        {
            // A file still held open; the temporary folder is left for the system to clean.
        }
    }

    private static void Write(StreamWriter log, string? line)
    {
        if (line is not null)
        {
            lock (log)
            {
                log.WriteLine(line);
            }
        }
    }

    private static IEnumerable<string> Arguments(string storage, string? postgres, int port, string data)
    {
        yield return $"--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:{port}";
        yield return $"--Kestrel:Endpoints:Http:Url=http://127.0.0.1:{FreePort()}";
        yield return $"--Orleans:SiloPort={FreePort()}";
        yield return $"--Orleans:GatewayPort={FreePort()}";
        switch (storage)
        {
            case "sqlite":
                yield return "--Storage:Provider=Sqlite";
                yield return $"--Storage:ConnectionString=Data Source={Path.Combine(data, "loyalty.db")}";
                break;
            case "postgres":
                yield return "--Storage:Provider=Postgres";
                yield return "--Storage:ConnectionString=" + (postgres ?? throw new ArgumentException("--spawn postgres needs --postgres CONNECTION or LOYALTY_BENCH_POSTGRES"));
                break;
            case "memory":
                yield return "--Storage:Provider=Memory";
                break;
            case LoadOptions.GrpcFloor:
                // Started with the engine's endpoint settings; of the engine's configuration it reads Kestrel's, the gateway's in-flight limit and the log levels.
                break;
            default:
                throw new ArgumentException(LoadOptions.SpawnKindsRefusal);
        }
    }

    private async Task WaitUntilReadyAsync()
    {
        using var channel = GrpcChannel.ForAddress(Target);
        var programs = new V1.ProgramAdmin.ProgramAdminClient(channel);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = "ready-check" }, deadline: DateTime.UtcNow.AddSeconds(2));
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unauthenticated)
            {
                // Any answer of the gateway's own means the engine is up (its keys are loaded before it listens).
                return;
            }
            catch (RpcException) when (clock.Elapsed < StartTimeout && !_process.HasExited)
            {
                await Task.Delay(ReadyPollInterval);
            }
        }
    }

    /// <summary>The engine (or the gRPC floor) built alongside this tool (the project references both, so one build makes all three).</summary>
    private static string BuiltAssembly(string folder, string project)
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name, configuration = here.Parent!.Name;
        DirectoryInfo? root = here;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "LoyaltyGrains.sln")))
        {
            root = root.Parent;
        }

        string path = Path.Combine(root?.FullName ?? throw new InvalidOperationException("LoyaltyGrains.sln not found above the load tester."),
            folder, project, "bin", configuration, tfm, project + ".dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"{project} is not built; build the solution in this configuration.", path);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
