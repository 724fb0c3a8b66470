namespace Loyalty.Host.Webhooks;

/// <summary>Webhook delivery (configuration section <c>Webhooks</c>).</summary>
public sealed class WebhookOptions
{
    /// <summary>The configuration section.</summary>
    public const string SectionName = "Webhooks";

    /// <summary>Whether this node delivers webhooks (every node may; a lease keeps each subscription on one).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Whether subscriptions may use plain http URLs (development and tests); otherwise https only.</summary>
    public bool AllowHttp { get; set; }

    /// <summary>
    /// Whether deliveries may reach addresses outside the public internet: loopback, private
    /// ranges, link-local (development, tests, and receivers inside the operator's own network).
    /// Off by default: a retailer's URL must not reach the engine's neighbours (<see cref="WebhookTargets"/>).
    /// </summary>
    public bool AllowPrivateTargets { get; set; }

    /// <summary>How long one delivery attempt may take, connection included.</summary>
    public int TimeoutSeconds { get; set; } = 10;

    /// <summary>Bytes of a receiver's answer that are read (for the delivery log); the rest is dropped.</summary>
    public int ResponseBytesMax { get; set; } = 1_024;

    /// <summary>The wait before the first retry of a failed delivery; each further retry waits twice as long.</summary>
    public int RetryFirstDelayMs { get; set; } = 1_000;

    /// <summary>The longest wait between two attempts.</summary>
    public int RetryDelayMaxSeconds { get; set; } = 3_600;

    /// <summary>
    /// A subscription whose deliveries have failed for this long is disabled (with its reason
    /// readable through the API). Three days by default: every event is retried for at least 24 hours.
    /// </summary>
    public int DisableAfterFailingSeconds { get; set; } = 259_200;

    /// <summary>Members whose events are delivered at once, per subscription (each member's in order).</summary>
    public int ConcurrencyPerWebhook { get; set; } = 16;

    /// <summary>Events read and delivered per step; the position is saved after each step.</summary>
    public int WindowEvents { get; set; } = 1_000;

    /// <summary>How long a node holds a subscription without renewing; a dead node's subscriptions move after this.</summary>
    public int LeaseSeconds { get; set; } = 30;

    /// <summary>How often a node looks for subscriptions to take, and for new events when idle.</summary>
    public int PollIntervalMs { get; set; } = 500;

    /// <summary>
    /// Subscriptions one node delivers at once. When more wait than the nodes have room for, a
    /// full node's workers take turns: one with nothing to deliver (or that has held its
    /// subscription for a minute) gives its place to the one that has waited longest.
    /// </summary>
    public int WorkersPerNodeMax { get; set; } = 64;

    /// <summary>
    /// How long a subscription keeps its node place while others wait, before it is asked to give
    /// it up (busy), or gives it up at a retry's wait (failing): two leases, a minute by default.
    /// </summary>
    public TimeSpan TurnAfter => TimeSpan.FromSeconds(2 * LeaseSeconds);

    /// <summary>Subscriptions a program may have.</summary>
    public int WebhooksPerProgramMax { get; set; } = 20;

    /// <summary>A problem with the values, or null.</summary>
    public string? Problem() =>
        TimeoutSeconds is < 1 or > 300 ? "Webhooks:TimeoutSeconds must be 1..300"
        : ResponseBytesMax is < 0 or > 65_536 ? "Webhooks:ResponseBytesMax must be 0..65536"
        : RetryFirstDelayMs is < 10 or > 3_600_000 ? "Webhooks:RetryFirstDelayMs must be 10..3600000"
        : RetryDelayMaxSeconds is < 1 or > 86_400 ? "Webhooks:RetryDelayMaxSeconds must be 1..86400"
        : DisableAfterFailingSeconds is < 1 or > 2_592_000 ? "Webhooks:DisableAfterFailingSeconds must be 1..2592000"
        : ConcurrencyPerWebhook is < 1 or > 256 ? "Webhooks:ConcurrencyPerWebhook must be 1..256"
        : WindowEvents is < 1 or > 10_000 ? "Webhooks:WindowEvents must be 1..10000"
        : LeaseSeconds is < 3 or > 3_600 ? "Webhooks:LeaseSeconds must be 3..3600"
        : PollIntervalMs is < 10 or > 60_000 ? "Webhooks:PollIntervalMs must be 10..60000"
        : WebhooksPerProgramMax is < 1 or > 1_000 ? "Webhooks:WebhooksPerProgramMax must be 1..1000"
        : WorkersPerNodeMax is < 1 or > 1_024 ? "Webhooks:WorkersPerNodeMax must be 1..1024"
        : null;
}
