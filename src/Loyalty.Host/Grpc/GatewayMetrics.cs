using System.Diagnostics;
using System.Diagnostics.Metrics;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>
/// The gateway's own timing of purchases: with the ledger's (<c>loyalty.ledger.append_duration</c>,
/// <c>loyalty.ledger.commit_duration</c>) it splits a till's latency into the engine's parts and
/// what lies outside it (the network, the client).
/// </summary>
internal static class GatewayMetrics
{
    /// <summary>The meter's name, the one <see cref="ClientFaults"/> publishes under too.</summary>
    public const string MeterName = "Loyalty.Gateway";

    private static readonly Meter Meter = new(MeterName);

    private static readonly KeyValuePair<string, object?> Accepted = new("status", "accepted");
    private static readonly KeyValuePair<string, object?> Duplicate = new("status", "duplicate");
    private static readonly KeyValuePair<string, object?> Rejected = new("status", "rejected");

    /// <summary>
    /// From a purchase read off an Ingest or IngestBatches stream to its acknowledgement made:
    /// the checks, the grain call with its durable commit, and the mapping back.
    /// </summary>
    private static readonly Histogram<double> PurchaseDuration = Meter.CreateHistogram<double>("loyalty.gateway.purchase_duration", "ms");

    /// <summary>
    /// Records a purchase begun at <paramref name="started"/> (<see cref="Stopwatch"/>
    /// ticks), tagged <c>status</c> <c>accepted</c>, <c>duplicate</c> or <c>rejected</c>: a refusal
    /// answered before any grain call is quick, and would otherwise pull the percentiles down.
    /// </summary>
    public static void RecordPurchase(long started, V1.AckStatus status) =>
        PurchaseDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds,
            status switch { V1.AckStatus.Accepted => Accepted, V1.AckStatus.Duplicate => Duplicate, _ => Rejected });
}
