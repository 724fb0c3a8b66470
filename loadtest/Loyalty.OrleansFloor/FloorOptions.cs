using System.Globalization;

namespace Loyalty.OrleansFloor;

/// <summary>The floor run's options: <c>--activations N --rate R --duration S --garbage BYTES --keep-id --await-once --silo-port P --gateway-port P</c>.</summary>
public sealed record FloorOptions(int Activations, int RatePerSecond, int DurationSeconds, int GarbageBytes, bool KeepId, int SiloPort, int GatewayPort)
{
    /// <summary>Whether each call's grain method waits once before it answers, as a member waits for its commit.</summary>
    public bool AwaitOnce { get; init; }

    /// <summary>Reads the options; an unknown or malformed one throws naming it.</summary>
    public static FloorOptions Parse(string[] args)
    {
        var options = new FloorOptions(100_000, 2_000, 30, 0, false, 11_990, 30_990);
        for (int i = 0; i < args.Length; i++)
        {
            options = args[i] switch
            {
                "--activations" => options with { Activations = Positive(args, ++i) },
                "--rate" => options with { RatePerSecond = Positive(args, ++i) },
                "--duration" => options with { DurationSeconds = Positive(args, ++i) },
                "--garbage" => options with { GarbageBytes = Positive(args, ++i, allowZero: true) },
                "--keep-id" => options with { KeepId = true },
                "--await-once" => options with { AwaitOnce = true },
                "--silo-port" => options with { SiloPort = Positive(args, ++i) },
                "--gateway-port" => options with { GatewayPort = Positive(args, ++i) },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }

        return options;
    }

    private static int Positive(string[] args, int at, bool allowZero = false)
    {
        if (at >= args.Length || !int.TryParse(args[at], NumberStyles.None, CultureInfo.InvariantCulture, out int value) || (value == 0 && !allowZero))
        {
            throw new ArgumentException($"{args[at - 1]} needs a {(allowZero ? "non-negative" : "positive")} whole number");
        }

        return value;
    }
}
