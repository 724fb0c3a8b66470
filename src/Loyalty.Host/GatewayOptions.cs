namespace Loyalty.Host;

/// <summary>Limits of the gRPC gateway. Bound from the <c>Gateway</c> configuration section.</summary>
public sealed class GatewayOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Gateway";

    /// <summary>Largest gRPC message the gateway accepts; a purchase at the line-item limit is far smaller.</summary>
    public const int MessageBytesMax = 1024 * 1024;

    /// <summary>
    /// Most purchases of one ingest stream being processed or waiting for their ack to be sent;
    /// the gateway stops reading the stream while the limit is reached (HTTP/2 flow control then
    /// slows the till).
    /// </summary>
    public int StreamInFlightMax { get; set; } = 1024;
}

/// <summary>The embedded silo's identity and ports. Bound from the <c>Orleans</c> section.</summary>
public sealed class SiloOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Orleans";

    /// <summary>Orleans cluster id.</summary>
    public string ClusterId { get; set; } = "loyalty";

    /// <summary>Silo-to-silo port.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Orleans client gateway port (the gRPC gateway does not need it).</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>
    /// How long a member grain may stay idle before it is deactivated (its state is already in
    /// storage). Bounds the silo's memory by the members active recently, not all members ever seen.
    /// </summary>
    public int IdleDeactivateAfterSeconds { get; set; } = 300;
}
