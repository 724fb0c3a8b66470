using System.Diagnostics.Metrics;
using Loyalty.Host.Grpc;

namespace Loyalty.Host;

/// <summary>Kinds of fault a client causes.</summary>
public enum ClientFaultKind
{
    /// <summary>No key, or one that is not valid, revoked or expired.</summary>
    Unauthenticated,

    /// <summary>A key used beyond its scope, program or stores.</summary>
    PermissionDenied,

    /// <summary>A key over its quota.</summary>
    QuotaExceeded,

    /// <summary>A message that does not parse.</summary>
    Malformed,

    /// <summary>A message larger than allowed, compressed or inflated.</summary>
    TooLarge,

    /// <summary>A stream reset or abandoned by the client.</summary>
    Reset,
}

/// <summary>
/// Counts faults caused by clients (metric <c>loyalty.gateway.client_faults</c>, tagged by kind)
/// and logs them at most <see cref="LogLinesPerSecondMax"/> lines a second in all, without stack
/// traces: a flood of bad input is visible in the metrics and the log, and cannot fill the disk.
/// What is not logged in a second is summed up in one line the next time a line is written.
/// </summary>
public sealed partial class ClientFaults : IDisposable
{
    /// <summary>Lines logged per second at most, over every kind of fault.</summary>
    public const int LogLinesPerSecondMax = 5;

    private readonly Meter _meter = new(GatewayMetrics.MeterName);
    private readonly Counter<long> _faults;
    private readonly ILogger<ClientFaults> _logger;
    private readonly LogBudget _lines;
    private long _total;

    /// <summary>Creates the counter.</summary>
    public ClientFaults(ILogger<ClientFaults> logger, TimeProvider clock)
    {
        _logger = logger;
        _lines = new LogBudget(LogLinesPerSecondMax, clock);
        _faults = _meter.CreateCounter<long>("loyalty.gateway.client_faults", unit: "{fault}", description: "Calls and messages refused because of the client");
    }

    /// <summary>Faults counted since start, all kinds (for tests and the log).</summary>
    public long Total => Interlocked.Read(ref _total);

    /// <summary>Counts a fault and logs it if this second's lines are not used up.</summary>
    public void Record(ClientFaultKind kind, string method, string detail)
    {
        Interlocked.Increment(ref _total);
        _faults.Add(1, new KeyValuePair<string, object?>("kind", kind.ToString()));
        if (!_lines.TryTake(out long suppressed))
        {
            return;
        }

        // Client text, cleaned: no line breaks or control characters reach the log.
        LogFault(kind, FreeText.Clean(method), FreeText.Clean(detail), suppressed);
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Client fault {Kind} on {Method}: {Detail} ({Suppressed} more not logged since the previous line)")]
    private partial void LogFault(ClientFaultKind kind, string method, string detail, long suppressed);
}
