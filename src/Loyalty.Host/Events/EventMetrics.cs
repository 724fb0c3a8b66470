using System.Diagnostics.Metrics;

namespace Loyalty.Host.Events;

/// <summary>The instruments of events out, under one meter (read them with dotnet-counters or OpenTelemetry).</summary>
public static class EventMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Loyalty.Events";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>Events written to event streams.</summary>
    public static readonly Counter<long> Streamed = Meter.CreateCounter<long>("loyalty.events.streamed", "{event}");

    /// <summary>Live subscribers that fell too far behind and went back to reading the ledger.</summary>
    public static readonly Counter<long> FellBehind = Meter.CreateCounter<long>("loyalty.events.fell_behind", "{subscriber}");

    /// <summary>Webhook delivery attempts, tagged <c>outcome</c> = delivered or failed.</summary>
    public static readonly Counter<long> WebhookAttempts = Meter.CreateCounter<long>("loyalty.webhooks.attempts", "{attempt}");

    /// <summary>From an entry's record time to its webhook delivery: how far behind deliveries are.</summary>
    public static readonly Histogram<double> WebhookDelay = Meter.CreateHistogram<double>("loyalty.webhooks.delivery_delay", "ms");

    /// <summary>Subscriptions disabled for failing too long.</summary>
    public static readonly Counter<long> WebhooksDisabled = Meter.CreateCounter<long>("loyalty.webhooks.disabled", "{webhook}");
}
