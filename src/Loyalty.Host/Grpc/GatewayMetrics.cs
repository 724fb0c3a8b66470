using System.Diagnostics.Metrics;

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

    /// <summary>
    /// From a purchase read off an Ingest or IngestBatches stream to its acknowledgement made:
    /// the checks, the grain call with its durable commit, and the mapping back.
    /// </summary>
    public static readonly Histogram<double> PurchaseDuration = Meter.CreateHistogram<double>("loyalty.gateway.purchase_duration", "ms");
}
