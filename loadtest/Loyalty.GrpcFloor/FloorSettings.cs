namespace Loyalty.GrpcFloor;

/// <summary>How the floor answers (section <c>Floor</c> of its configuration).</summary>
/// <param name="Hops">Times an answer is handed to the thread pool before it is written (0: written by the reading thread).</param>
internal sealed record FloorSettings(int Hops)
{
    /// <summary>The most hops an answer may take: enough to model the engine's, few enough that a typo is refused.</summary>
    public const int HopsMax = 8;

    public static FloorSettings From(IConfiguration configuration)
    {
        int hops = configuration.GetValue("Floor:Hops", 0);
        return hops is >= 0 and <= HopsMax
            ? new FloorSettings(hops)
            : throw new ArgumentOutOfRangeException(nameof(configuration), hops, $"Floor:Hops must be 0..{HopsMax}");
    }
}
