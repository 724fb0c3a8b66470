namespace Loyalty.Host.Events;

/// <summary>The event stream's limits (configuration section <c>Events</c>).</summary>
public sealed class EventOptions
{
    /// <summary>The configuration section.</summary>
    public const string SectionName = "Events";

    /// <summary>
    /// How often a node reads the ledger for entries other nodes committed (its own commits wake
    /// it at once). The delay of a live event committed on another node is at most about this.
    /// </summary>
    public int PollIntervalMs { get; set; } = 200;

    /// <summary>
    /// Entries a live subscriber may fall behind by before it is switched back to reading the
    /// ledger; bounds the memory a slow subscriber holds.
    /// </summary>
    public int SubscriberBufferEntriesMax { get; set; } = 4_096;

    /// <summary>Event streams one node serves at once; more are refused with RESOURCE_EXHAUSTED.</summary>
    public int SubscribersMax { get; set; } = 256;

    /// <summary>Event streams one program may have open on one node: one retailer cannot take every place.</summary>
    public int SubscribersPerProgramMax { get; set; } = 32;

    /// <summary>Entries read from the ledger per query, in replay and when following.</summary>
    public int PageEntries { get; set; } = 500;

    /// <summary>A problem with the values, or null.</summary>
    public string? Problem() =>
        PollIntervalMs is < 10 or > 60_000 ? "Events:PollIntervalMs must be 10..60000"
        : SubscriberBufferEntriesMax is < 16 or > 1_000_000 ? "Events:SubscriberBufferEntriesMax must be 16..1000000"
        : SubscribersMax is < 1 or > 100_000 ? "Events:SubscribersMax must be 1..100000"
        : SubscribersPerProgramMax is < 1 or > 100_000 ? "Events:SubscribersPerProgramMax must be 1..100000"
        : PageEntries is < 1 or > 10_000 ? "Events:PageEntries must be 1..10000"
        : null;
}
