using System.Net;
using System.Net.Sockets;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// Ports on 127.0.0.1 for the servers tests start. They are handed out in turn from the range just
/// below the kernel's ephemeral ports (32768–60999 on Linux) and above the ranges Orleans' test
/// cluster takes its silos' and gateways' ports from, each checked free by binding it: a port
/// the kernel picks for a listener comes from the range outgoing connections (to PostgreSQL, to
/// a silo) take theirs from, so one of those could take it before the server bound it (seen in
/// CI as "address already in use"). Handed out in turn, two tests of a run never get the same.
/// </summary>
public static class Ports
{
    private const int RangeStart = 30_000;
    private const int RangeSize = 2_768;

    // Where this run starts in the range: another test process on the machine most likely starts elsewhere.
    private static int _next = Random.Shared.Next(RangeSize);

    /// <summary>A port on 127.0.0.1 that was free a moment ago, not handed out before in this run.</summary>
    public static int Free()
    {
        for (int tried = 0; tried < RangeSize; tried++)
        {
            int port = RangeStart + (int)((uint)Interlocked.Increment(ref _next) % RangeSize);
            if (IsFree(port))
            {
                return port;
            }
        }

        throw new InvalidOperationException($"No free port on 127.0.0.1 in {RangeStart}..{RangeStart + RangeSize - 1}.");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
