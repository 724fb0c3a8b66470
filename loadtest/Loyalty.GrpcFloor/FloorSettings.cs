namespace Loyalty.GrpcFloor;

/// <summary>How the floor answers: section <c>Floor</c> of its configuration, and the engine's own in-flight limit.</summary>
/// <param name="Hops">Times an answer is handed to the thread pool before it is written (0: by the reading thread).</param>
/// <param name="InFlightMax">Purchases of one stream read and not yet answered, at most: the engine's <c>Gateway:StreamInFlightMax</c>.</param>
/// <param name="StreamsPerConnectionMax">
/// Kestrel's <c>Limits:Http2:MaxStreamsPerConnection</c> as configured (Kestrel's own default, 100,
/// when the engine's settings were not found): reported at start, so that a run says whether the
/// floor ran under the engine's limits.
/// </param>
internal sealed record FloorSettings(int Hops, int InFlightMax, int StreamsPerConnectionMax)
{
    /// <summary>The most hops an answer may take: enough to model the engine's, few enough that a typo is refused.</summary>
    public const int HopsMax = 8;

    /// <summary>
    /// One trip, by default: a member's answer reaches the engine's gateway on another thread than
    /// the one that read the purchase (the grain's completion), and the writer runs there.
    /// </summary>
    public const int HopsDefault = 1;

    /// <summary>The engine's default of <c>Gateway:StreamInFlightMax</c>, used when the configuration has none.</summary>
    public const int InFlightMaxDefault = 1024;

    /// <summary>Kestrel's own default of <c>Limits:Http2:MaxStreamsPerConnection</c>.</summary>
    public const int KestrelStreamsPerConnectionDefault = 100;

    public static FloorSettings From(IConfiguration configuration)
    {
        int hops = configuration.GetValue("Floor:Hops", HopsDefault);
        if (hops is < 0 or > HopsMax)
        {
            throw new ArgumentOutOfRangeException(nameof(configuration), hops, $"Floor:Hops must be 0..{HopsMax}");
        }

        int inFlight = configuration.GetValue("Gateway:StreamInFlightMax", InFlightMaxDefault);
        if (inFlight < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(configuration), inFlight, "Gateway:StreamInFlightMax must be 1 or more");
        }

        return new FloorSettings(hops, inFlight, configuration.GetValue("Kestrel:Limits:Http2:MaxStreamsPerConnection", KestrelStreamsPerConnectionDefault));
    }
}
