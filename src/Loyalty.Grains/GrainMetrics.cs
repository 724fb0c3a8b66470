using System.Diagnostics.Metrics;

namespace Loyalty.Grains;

/// <summary>The grains' instruments, under one meter (read them with dotnet-counters or OpenTelemetry).</summary>
public static class GrainMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Loyalty.Members";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>How long a member activation takes to have its state: snapshot read plus ledger tail replayed, in milliseconds.</summary>
    public static readonly Histogram<double> ColdLoadDuration = Meter.CreateHistogram<double>("loyalty.member.cold_load_duration", "ms");

    /// <summary>
    /// How many entries one member's commit group holds when several of its changes go to the
    /// ledger together (a busy member); at most the grain's cap per group. Changes committed
    /// alone (the usual case) are not recorded.
    /// </summary>
    public static readonly Histogram<int> GroupEntries = Meter.CreateHistogram<int>("loyalty.member.group_entries", "{entry}");

    /// <summary>
    /// Members' loads (snapshot read and ledger replayed) that failed, by program (tag
    /// <c>program</c>). A member that cannot be loaded tries again at most every
    /// <see cref="MemberGrain.LoadRetryDelay"/>, answering UNAVAILABLE meanwhile.
    /// </summary>
    public static readonly Counter<long> LoadFailures = Meter.CreateCounter<long>("loyalty.member.load_failures", "{load}");

    /// <summary>
    /// Units a reward's stock was asked to give back beyond those it had taken, by program (tag
    /// <c>program</c>): a unit given back twice. The stock's count stays at 0; any value here is a
    /// defect to report.
    /// </summary>
    public static readonly Counter<long> StockOverReleased = Meter.CreateCounter<long>("loyalty.stock.over_released", "{unit}");
}
