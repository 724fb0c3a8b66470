using Loyalty.Storage;
using Loyalty.Storage.Reports;

namespace Loyalty.Host.Reports;

/// <summary>
/// <c>Loyalty.Host rebuild-reports [program …]</c>: rebuilds report totals from the ledger, for the
/// programs named or every program with entries, on the configured database, and exits. Run it
/// with every engine on that database stopped: an engine writing while a program is rebuilt could
/// add totals the rebuild then replaces.
/// </summary>
public static class RebuildReportsCommand
{
    /// <summary>The command's name, the first argument.</summary>
    public const string Name = "rebuild-reports";

    /// <summary>Whether the arguments ask for this command.</summary>
    public static bool IsAsked(string[] args) => args.Length > 0 && args[0] == Name;

    /// <summary>The arguments that are configuration (<c>--Key=value</c>): without the command and its program names.</summary>
    public static string[] ConfigurationArgs(string[] args) =>
        IsAsked(args) ? [.. args.Skip(1).SkipWhile(a => !a.StartsWith("--", StringComparison.Ordinal))] : args;

    /// <summary>Runs the command; returns the process exit code.</summary>
    public static async Task<int> RunAsync(IConfiguration configuration, string[] args, TextWriter output)
    {
        string[] programs = [.. args.Skip(1).TakeWhile(a => !a.StartsWith("--", StringComparison.Ordinal))];
        if (programs.FirstOrDefault(p => LoyaltyIds.Check(p, "program") is not null) is { } bad)
        {
            await output.WriteLineAsync($"{Name}: {LoyaltyIds.Check(bad, "program")}");
            return 2;
        }

        StorageOptions storage = configuration.ReadStorageOptions().Resolved();
        ILedgerStore store = StorageSiloBuilderExtensions.CreateLedgerStore(storage);
        try
        {
            await store.MigrateAsync(CancellationToken.None);
            foreach (string? program in programs.Length == 0 ? new string?[] { null } : programs)
            {
                await store.MarkTotalsForRebuildAsync(program, CancellationToken.None);
            }

            (int rebuilt, long entries) = await ReportRebuild.RunDueAsync(store, CancellationToken.None);
            await output.WriteLineAsync($"{Name}: rebuilt the report totals of {rebuilt} programs from {entries} ledger entries ({storage.Provider})");
            return 0;
        }
        finally
        {
            switch (store)
            {
                case IAsyncDisposable d: await d.DisposeAsync(); break;
                case IDisposable d: d.Dispose(); break;
            }
        }
    }
}
