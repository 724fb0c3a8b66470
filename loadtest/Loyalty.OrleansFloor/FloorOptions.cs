using System.Globalization;

namespace Loyalty.OrleansFloor;

/// <summary>
/// The floor run's options: <c>--activations N --rate R --duration S --garbage BYTES --keep-id --await-once
/// --ledger sqlite|postgres|file --ledger-connection STRING --direct --silo-port P --gateway-port P</c>.
/// </summary>
public sealed record FloorOptions(int Activations, int RatePerSecond, int DurationSeconds, int GarbageBytes, bool KeepId, int SiloPort, int GatewayPort)
{
    /// <summary>Whether each call's grain method waits once before it answers, as a member waits for its commit.</summary>
    public bool AwaitOnce { get; init; }

    /// <summary>
    /// Where each call's ledger entry is committed, through the engine's own commit queue and
    /// store, before the call answers (as a member waits for its purchase's commit); none by default.
    /// </summary>
    public FloorLedger.Kind Ledger { get; init; }

    /// <summary>
    /// The ledger's connection string: a PostgreSQL server (required for it), or a SQLite file (a
    /// new one in the temporary folder by default); for a file ledger, the folder its log goes in
    /// (the temporary folder by default).
    /// </summary>
    public string? LedgerConnection { get; init; }

    /// <summary>Calls go straight to the ledger from the calling loop, with no grain: the storage path's floor alone.</summary>
    public bool Direct { get; init; }

    /// <summary>Reads the options; an unknown or malformed one throws naming it.</summary>
    public static FloorOptions Parse(string[] args)
    {
        var options = new FloorOptions(100_000, 2_000, 30, 0, false, 11_990, 30_990);
        for (int i = 0; i < args.Length; i++)
        {
            options = args[i] switch
            {
                "--activations" => options with { Activations = Positive(args, ++i) },
                "--rate" => options with { RatePerSecond = Positive(args, ++i) },
                "--duration" => options with { DurationSeconds = Positive(args, ++i) },
                "--garbage" => options with { GarbageBytes = Positive(args, ++i, allowZero: true) },
                "--keep-id" => options with { KeepId = true },
                "--await-once" => options with { AwaitOnce = true },
                "--ledger" => options with { Ledger = LedgerKind(args, ++i) },
                "--ledger-connection" => options with { LedgerConnection = Text(args, ++i) },
                "--direct" => options with { Direct = true },
                "--silo-port" => options with { SiloPort = Positive(args, ++i) },
                "--gateway-port" => options with { GatewayPort = Positive(args, ++i) },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }

        if (options.Ledger == FloorLedger.Kind.Postgres && string.IsNullOrEmpty(options.LedgerConnection))
        {
            throw new ArgumentException("--ledger postgres needs --ledger-connection naming the server");
        }

        if (options.Ledger == FloorLedger.Kind.None && (options.Direct || options.LedgerConnection is not null))
        {
            throw new ArgumentException("--direct and --ledger-connection need --ledger");
        }

        if (options.Ledger == FloorLedger.Kind.File && !OperatingSystem.IsLinux())
        {
            throw new ArgumentException("--ledger file syncs with Linux's fdatasync: it runs on Linux only");
        }

        if (options.Ledger == FloorLedger.Kind.File && options.LedgerConnection is { } folder && !Directory.Exists(folder))
        {
            throw new ArgumentException($"--ledger file takes a folder as --ledger-connection (the disk to measure); {folder} is none");
        }

        if (options.Ledger != FloorLedger.Kind.None && options.AwaitOnce)
        {
            throw new ArgumentException("--await-once and --ledger both make the grain wait: choose one");
        }

        if (options.Direct && (options.KeepId || options.GarbageBytes > 0))
        {
            throw new ArgumentException("--direct calls no grain: --keep-id and --garbage do not apply");
        }

        return options;
    }

    private static FloorLedger.Kind LedgerKind(string[] args, int at) =>
        (at < args.Length ? args[at] : null) switch
        {
            "sqlite" => FloorLedger.Kind.Sqlite,
            "postgres" => FloorLedger.Kind.Postgres,
            "file" => FloorLedger.Kind.File,
            _ => throw new ArgumentException("--ledger needs sqlite, postgres or file"),
        };

    private static string Text(string[] args, int at) =>
        at < args.Length && args[at].Length > 0 ? args[at] : throw new ArgumentException($"{args[at - 1]} needs a value");

    private static int Positive(string[] args, int at, bool allowZero = false)
    {
        if (at >= args.Length || !int.TryParse(args[at], NumberStyles.None, CultureInfo.InvariantCulture, out int value) || (value == 0 && !allowZero))
        {
            throw new ArgumentException($"{args[at - 1]} needs a {(allowZero ? "non-negative" : "positive")} whole number");
        }

        return value;
    }
}
