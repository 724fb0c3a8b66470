namespace Loyalty.Host;

/// <summary>Limits of the gRPC gateway. Bound from the <c>Gateway</c> configuration section.</summary>
public sealed class GatewayOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Gateway";

    /// <summary>Largest gRPC message the gateway accepts; a purchase at the line-item limit is far smaller.</summary>
    public const int MessageBytesMax = 1024 * 1024;

    /// <summary>
    /// Largest message of the purchase service, where one message may carry a batch of up to
    /// <c>Limits.IngestBatchPurchasesMax</c> purchases. A larger message fails the call with
    /// RESOURCE_EXHAUSTED and ends the stream.
    /// </summary>
    public const int PurchaseMessageBytesMax = 4 * 1024 * 1024;

    /// <summary>
    /// Largest message of a purchase call that carries one purchase or return (<c>Accrue</c>,
    /// <c>Quote</c>, <c>Return</c>, each message of <c>Ingest</c>): one at every limit (500 lines
    /// whose SKUs and categories are 64 characters of four UTF-8 bytes each) is under 300 KiB.
    /// Parsing a message makes several times its size in objects, so a call's limit is what the
    /// call can need, not the service's.
    /// </summary>
    public const int PurchaseCallBytesMax = 512 * 1024;

    /// <summary>The largest message of <paramref name="method"/> ("/loyalty.v1.Purchases/Accrue").</summary>
    public static int MessageBytesMaxOf(string method) =>
        !method.StartsWith("/loyalty.v1.Purchases/", StringComparison.Ordinal) ? MessageBytesMax
        : method == "/loyalty.v1.Purchases/IngestBatches" ? PurchaseMessageBytesMax
        : PurchaseCallBytesMax;

    /// <summary>Most batches of one IngestBatches stream dispatched but not yet answered on the wire.</summary>
    public const int StreamBatchesPendingMax = 64;

    /// <summary>
    /// Most purchases of one IngestBatches stream dispatched but not yet answered on the wire: the
    /// gateway stops reading the stream while the limit is reached, so a client that does not read
    /// its answers holds at most this many (about 250 bytes each). At least a batch's worth, so
    /// that a full batch can always be dispatched.
    /// </summary>
    public const int StreamAnswersPendingMax = 2 * Limits.IngestBatchPurchasesMax;

    /// <summary>
    /// Most purchases of one ingest stream at their member grains; the gateway stops reading the
    /// stream while the limit is reached (HTTP/2 flow control then slows the till). On
    /// <c>Ingest</c> a purchase counts until its ack is sent. On <c>IngestBatches</c> it counts
    /// until its member has answered, so that a batch larger than the limit still moves; decided
    /// answers then wait to be written in a queue of at most <see cref="StreamBatchesPendingMax"/>
    /// batches per stream.
    /// </summary>
    public int StreamInFlightMax { get; set; } = 1024;

    /// <summary>
    /// Seconds a purchase stream may stay silent before the gateway ends it (DEADLINE_EXCEEDED);
    /// 0 for never. HTTP/2 keep-alive pings (Kestrel:Limits:Http2:KeepAlivePingDelay) do not count
    /// as messages: a till that has nothing to send for this long opens a new stream when it has.
    /// </summary>
    public int StreamIdleTimeoutSeconds { get; set; } = 600;

    /// <summary>
    /// Seconds a stopping node (SIGTERM) keeps serving while its health says not-ready, before it
    /// stops taking calls; the host's shutdown timeout must be longer.
    /// </summary>
    public int DrainDelaySeconds { get; set; } = 5;
}

/// <summary>The embedded silo's identity and ports. Bound from the <c>Orleans</c> section.</summary>
public sealed class SiloOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Orleans";

    /// <summary>Orleans cluster id: the engines sharing one membership table with this id form one cluster.</summary>
    public string ClusterId { get; set; } = "loyalty";

    /// <summary>
    /// How engines find each other: <see cref="MembershipKind.Localhost"/> (one engine, the
    /// default) or <see cref="MembershipKind.Postgres"/> (several engines sharing the PostgreSQL of
    /// <c>Storage:ConnectionString</c>, through Orleans' ADO.NET clustering).
    /// </summary>
    public MembershipKind Membership { get; set; } = MembershipKind.Localhost;

    /// <summary>
    /// The address other engines reach this one at (cluster mode): an IP address, or a host name
    /// whose first IPv4 address is taken (in a container, its service name); empty for 127.0.0.1.
    /// </summary>
    public string AdvertisedAddress { get; set; } = "";

    /// <summary>
    /// How long a silent engine may go unanswered before the others declare it dead and take over
    /// its members (cluster mode): probes time out after a third of it, and three missed probes
    /// are a death. Orleans' default would be about 15 s; a till's retry should not wait that long.
    /// </summary>
    public int FailureDetectionSeconds { get; set; } = 6;

    /// <summary>Silo-to-silo port.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Orleans client gateway port (the gRPC gateway does not need it).</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>
    /// How long a member grain may stay idle before it is deactivated (its state is already in
    /// storage). Bounds the silo's memory by the members active recently, not all members ever seen.
    /// </summary>
    public int IdleDeactivateAfterSeconds { get; set; } = 300;

    /// <summary>
    /// Entries in Orleans' cache of where grains live (0 for none, else
    /// <see cref="DirectoryCacheSizeMin"/>..<see cref="DirectoryCacheSizeMax"/>); empty for the default of
    /// the membership: 0 for <see cref="MembershipKind.Localhost"/> and Orleans' own (1,000,000)
    /// for a cluster. An entry costs about 350 bytes per member held (read from a heap dump at 100,000). On one
    /// engine the cache only repeats the grain directory, which lives in the same process and is
    /// read without it; in a cluster an entry saves a call to the node that holds that part of
    /// the directory.
    /// </summary>
    public int? DirectoryCacheSize { get; set; }

    /// <summary>Largest <see cref="DirectoryCacheSize"/> accepted.</summary>
    public const int DirectoryCacheSizeMax = 10_000_000;

    /// <summary>Smallest cache accepted other than none: Orleans refuses a smaller one.</summary>
    public const int DirectoryCacheSizeMin = 3;

    /// <summary>
    /// With the cache off, the size Orleans is still given: it also builds a cache of that size
    /// for grains kept in an external directory (none here).
    /// </summary>
    public const int ExternalDirectoryCacheSize = 1_000;

    /// <summary>The directory cache's size for this engine, or an exception naming the setting when out of range.</summary>
    public int DirectoryCacheEntries(int orleansDefault) => DirectoryCacheSize switch
    {
        null => Membership == MembershipKind.Localhost ? 0 : orleansDefault,
        0 => 0,
        >= DirectoryCacheSizeMin and <= DirectoryCacheSizeMax and int size => size,
        _ => throw new InvalidOperationException($"Orleans:DirectoryCacheSize must be 0 (no cache) or {DirectoryCacheSizeMin}..{DirectoryCacheSizeMax}."),
    };
}

/// <summary>How engines find each other.</summary>
public enum MembershipKind
{
    /// <summary>One engine on its own (Orleans' development clustering on the loopback interface).</summary>
    Localhost,

    /// <summary>A cluster whose membership table lives in the engine's PostgreSQL.</summary>
    Postgres,
}
