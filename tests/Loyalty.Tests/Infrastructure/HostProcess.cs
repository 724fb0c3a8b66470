using Loyalty.Api;
using System.Diagnostics;
using Grpc.Core;
using Grpc.Net.Client;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// The engine as a separate process (the built Loyalty.Host.dll), so a test can kill it with
/// SIGKILL. Only the process this class started is ever killed, by its own handle.
/// </summary>
public sealed class HostProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private readonly Process _process;
    private readonly Queue<string> _output = new();

    private HostProcess(Process process, int port, string[] args)
    {
        _process = process;
        Port = port;
        Args = args;
        Channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}");
        Invoker = Channel.WithKey(TestKeys.Operator);
        Programs = new V1.ProgramAdmin.ProgramAdminClient(Invoker);
        Members = new V1.Members.MembersClient(Invoker);
        Purchases = new V1.Purchases.PurchasesClient(Invoker);
    }

    public GrpcChannel Channel { get; }

    /// <summary>The gRPC port it serves on.</summary>
    public int Port { get; }

    /// <summary>The engine's process id.</summary>
    public int ProcessId => _process.Id;

    /// <summary>The command line it was started with (to start it again the same way).</summary>
    public IReadOnlyList<string> Args { get; }

    /// <summary>Calls over <see cref="Channel"/> with the operator key.</summary>
    public CallInvoker Invoker { get; }

    public V1.ProgramAdmin.ProgramAdminClient Programs { get; }

    public V1.Members.MembersClient Members { get; }

    public V1.Purchases.PurchasesClient Purchases { get; }

    /// <summary>Characters the process has written to stdout and stderr (its log), newlines included.</summary>
    public long OutputChars => Interlocked.Read(ref _outputChars);

    private long _outputChars;

    /// <summary>The process's resident memory now, in MiB.</summary>
    public double WorkingSetMiB
    {
        get
        {
            _process.Refresh();
            return _process.WorkingSet64 / 1024.0 / 1024.0;
        }
    }

    /// <summary>The last lines the process wrote, for failure messages.</summary>
    public string RecentOutput
    {
        get
        {
            lock (_output)
            {
                return string.Join(Environment.NewLine, _output);
            }
        }
    }

    public static async Task<HostProcess> StartAsync(string[] args, int port)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = TestDatabases.TempFolder(),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(HostAssemblyPath());
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        Process process = Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start.");
        var host = new HostProcess(process, port, args);
        process.OutputDataReceived += (_, e) => host.Remember(e.Data);
        process.ErrorDataReceived += (_, e) => host.Remember(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await host.WaitUntilServingAsync();
        return host;
    }

    /// <summary>SIGKILL: no shutdown hooks, no flush, like a power cut for the process.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: false);
        _process.WaitForExit(10_000);
    }

    /// <summary>
    /// SIGTERM, as an orchestrator stops a node: the engine drains and stops by itself. Returns its
    /// exit code and how long it took; the process is killed if it has not exited within <paramref name="timeout"/>.
    /// </summary>
    public async Task<(int ExitCode, TimeSpan Took)> TerminateAsync(TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        using (Process signal = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await signal.WaitForExitAsync();
        }

        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
            throw new TimeoutException($"The engine did not stop within {timeout} of SIGTERM:{Environment.NewLine}{RecentOutput}");
        }

        return (_process.ExitCode, clock.Elapsed);
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: false);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }

    internal static string HostAssemblyPath()
    {
        // tests/Loyalty.Tests/bin/<Configuration>/<tfm>/ -> src/Loyalty.Host/bin/<Configuration>/<tfm>/
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name;
        string configuration = here.Parent!.Name;
        string path = Path.Combine(RepoPaths.Root(), "src", "Loyalty.Host", "bin", configuration, tfm, "Loyalty.Host.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build the solution first; the host is missing.", path);
    }

    private void Remember(string? line)
    {
        if (line is null)
        {
            return;
        }

        Interlocked.Add(ref _outputChars, line.Length + 1);
        lock (_output)
        {
            _output.Enqueue(line);
            while (_output.Count > 40)
            {
                _output.Dequeue();
            }
        }
    }

    private async Task WaitUntilServingAsync()
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"The host exited with {_process.ExitCode}:{Environment.NewLine}{RecentOutput}");
            }

            try
            {
                await Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = "readiness-probe" }, deadline: DateTime.UtcNow.AddSeconds(5));
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unauthenticated)
            {
                return;
            }
            catch (RpcException) when (deadline.Elapsed < StartTimeout)
            {
                await Task.Delay(200);
            }
        }
    }
}
