using System.Net;
using System.Net.Sockets;

namespace Loyalty.Host.Webhooks;

/// <summary>
/// Where webhooks may connect. A subscription's URL is a retailer's to choose, and the engine
/// runs inside someone's network: unless <see cref="WebhookOptions.AllowPrivateTargets"/>, a
/// delivery never connects to an address that is not on the public internet (loopback, private
/// ranges, link-local such as the cloud metadata service, carrier-grade NAT, multicast,
/// reserved; in IPv6 anything outside global unicast, its special-purpose block with Teredo, and
/// the NAT64 and 6to4 forms of an internal IPv4 address). The check is made on the addresses the
/// connection is about to use, after DNS, so a name that resolves (or is rebound) to an internal
/// address is refused too; URLs naming such an address outright are refused when a subscription
/// is created or changed.
/// </summary>
public static class WebhookTargets
{
    /// <summary>Whether <paramref name="address"/> is outside the public internet.</summary>
    public static bool IsInternal(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            Span<byte> b = stackalloc byte[4];
            address.TryWriteBytes(b, out _);
            return b[0] is 0 or 10 or 127 or >= 224                       // this network, private, loopback, multicast and reserved
                || b[0] == 100 && b[1] is >= 64 and <= 127                  // carrier-grade NAT
                || b[0] == 169 && b[1] == 254                               // link-local (cloud metadata)
                || b[0] == 172 && b[1] is >= 16 and <= 31                   // private
                || b[0] == 192 && b[1] == 168                               // private
                || b[0] == 192 && b[1] == 0 && b[2] is 0 or 2               // protocol assignments, documentation
                || b[0] == 198 && b[1] is 18 or 19                          // benchmarking
                || b[0] == 198 && b[1] == 51 && b[2] == 100                 // documentation
                || b[0] == 203 && b[1] == 0 && b[2] == 113;                 // documentation
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return true;
        }

        Span<byte> v6 = stackalloc byte[16];
        address.TryWriteBytes(v6, out _);
        if (v6[..12].SequenceEqual(Nat64Prefix) || v6[..12].IndexOfAnyExcept((byte)0) < 0)
        {
            // The well-known NAT64 prefix and the IPv4-compatible forms (loopback ::1 and the
            // unspecified :: among them) reach the IPv4 address they carry.
            return IsInternal(new IPAddress(v6[12..]));
        }

        // Only global unicast (2000::/3) is the public internet; outside it are unique-local,
        // link-local, multicast, discard-only, local-use NAT64 (64:ff9b:1::/48) and reserved space.
        if ((v6[0] & 0xe0) != 0x20)
        {
            return true;
        }

        return v6[0] == 0x20 && v6[1] == 0x02 && IsInternal(new IPAddress(v6[2..6]))   // 6to4 reaches the IPv4 address it carries
            || v6[0] == 0x20 && v6[1] == 0x01 && v6[2] <= 0x01                          // special purpose (2001::/23): Teredo, benchmarking, ORCHID…
            || v6[0] == 0x20 && v6[1] == 0x01 && v6[2] == 0x0d && v6[3] == 0xb8         // documentation
            || v6[0] == 0x3f && v6[1] == 0xff && v6[2] <= 0x0f;                         // documentation (3fff::/20)
    }

    /// <summary>Why a URL's host may not receive deliveries (an internal address, or a name only this machine knows), or null.</summary>
    public static string? Refusal(Uri url) =>
        IPAddress.TryParse(url.IdnHost, out IPAddress? literal) && IsInternal(literal)
            ? $"url's address {literal} is not on the public internet (loopback, private or link-local); such targets are off: Webhooks:AllowPrivateTargets"
            : url.IsLoopback || url.IdnHost.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase) || url.IdnHost.EndsWith(".localhost.", StringComparison.OrdinalIgnoreCase)
                ? $"url's host '{url.IdnHost}' is this machine; such targets are off: Webhooks:AllowPrivateTargets"
                : null;

    /// <summary>
    /// Connects to <paramref name="endpoint"/> through only the addresses it resolves to that are
    /// allowed; refuses with a clear message when none is.
    /// </summary>
    public static async ValueTask<Stream> ConnectAsync(DnsEndPoint endpoint, bool allowInternal, CancellationToken cancellationToken)
    {
        IPAddress[] resolved = IPAddress.TryParse(endpoint.Host, out IPAddress? literal) ? [literal]
            : await Dns.GetHostAddressesAsync(endpoint.Host, cancellationToken);
        IPAddress[] allowed = allowInternal ? resolved : [.. resolved.Where(a => !IsInternal(a))];
        if (allowed.Length == 0)
        {
            throw new HttpRequestException(
                $"'{endpoint.Host}' resolves only to addresses that are not on the public internet; such targets are off: Webhooks:AllowPrivateTargets");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(allowed, endpoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>64:ff9b::/96, the well-known NAT64 prefix.</summary>
    private static ReadOnlySpan<byte> Nat64Prefix => [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
}
