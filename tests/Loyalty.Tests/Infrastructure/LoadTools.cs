using System.Diagnostics;

namespace Loyalty.Tests.Infrastructure;

/// <summary>The benchmark tools under loadtest/, run as a user starts them: built next to the tests, in the same configuration.</summary>
public static class LoadTools
{
    /// <summary>How long a tool may run in a test before it is killed and the test fails.</summary>
    private static readonly TimeSpan RunMax = TimeSpan.FromMinutes(2);

    /// <summary>Runs loadtest/<paramref name="project"/> to its end; returns its exit code and everything it wrote.</summary>
    public static async Task<(int Exit, string Output)> RunAsync(string project, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        // Built next to the tests in the same configuration (bin/<configuration>/<framework>).
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string dll = Path.Combine(RepoPaths.Root(), "loadtest", project, "bin", configuration, "net10.0", project + ".dll");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach ((string name, string value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }

        info.ArgumentList.Add(dll);
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(info)!;
        using var timeout = new CancellationTokenSource(RunMax);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        Task<string> stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout + await stderr);
    }
}
