using System.Globalization;

namespace Loyalty.LoadTest;

/// <summary>
/// The whole machine's processor time so far, from the first line of Linux's <c>/proc/stat</c>
/// (in the kernel's clock ticks, every core summed). On a virtual machine, <see cref="Steal"/> is
/// the time the host ran something else while this machine had work to run: a second with a lot
/// of it shows as a spike in the latency that neither the engine nor the tester caused, so the
/// report gives it beside each second's tail.
/// </summary>
internal readonly record struct MachineCpu(long Busy, long Idle, long Steal)
{
    private const string StatPath = "/proc/stat";

    /// <summary>All the ticks counted: busy, idle (waiting for input or output included) and stolen.</summary>
    public long Total => Busy + Idle + Steal;

    /// <summary>The counters now, or null where the system does not give them (not Linux, or no access).</summary>
    public static MachineCpu? Read()
    {
        try
        {
            using var reader = new StreamReader(StatPath);
            return reader.ReadLine() is { } first ? Parse(first) : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Reads the aggregate line, <c>cpu user nice system idle iowait irq softirq steal …</c>; the
    /// guest times that may follow are already inside user and nice. Null when the line is not that.
    /// </summary>
    public static MachineCpu? Parse(string line)
    {
        string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 9 || fields[0] != "cpu")
        {
            return null;
        }

        var ticks = new long[8];
        for (int i = 0; i < ticks.Length; i++)
        {
            if (!long.TryParse(fields[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out ticks[i]))
            {
                return null;
            }
        }

        // user + nice + system + irq + softirq; idle + iowait; steal.
        return new MachineCpu(ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6], ticks[3] + ticks[4], ticks[7]);
    }

    /// <summary>The share of the interval from <paramref name="earlier"/> to this reading: busy and stolen, in percent (null for an empty interval).</summary>
    public (double BusyPct, double StealPct)? Since(MachineCpu earlier)
    {
        long total = Total - earlier.Total;
        if (total <= 0)
        {
            return null;
        }

        return (100.0 * (Busy - earlier.Busy) / total, 100.0 * (Steal - earlier.Steal) / total);
    }
}
