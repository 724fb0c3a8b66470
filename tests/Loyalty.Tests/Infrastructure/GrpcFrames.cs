using System.Buffers.Binary;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using Grpc.Core;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// gRPC requests written by hand over HTTP/2, for tests that send what a well-behaved client
/// library never would: broken framing, compressed bombs, garbage bodies.
/// </summary>
public static class GrpcFrames
{
    /// <summary>An HTTP/2 (prior knowledge, no TLS) client for the engine.</summary>
    public static HttpClient Client() => new(new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
    {
        DefaultRequestVersion = HttpVersion.Version20,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        Timeout = TimeSpan.FromSeconds(60),
    };

    /// <summary>One length-prefixed message: the compressed flag, the length (as declared, unless given), the bytes.</summary>
    public static byte[] Frame(ReadOnlySpan<byte> payload, bool compressed = false, uint? declaredLength = null)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = compressed ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), declaredLength ?? (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(5));
        return frame;
    }

    /// <summary>Gzip of <paramref name="zeroBytes"/> zero bytes: a small message that inflates to a huge one.</summary>
    public static byte[] GzipBomb(int zeroBytes)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            var zeros = new byte[1024 * 1024];
            for (int written = 0; written < zeroBytes; written += zeros.Length)
            {
                gzip.Write(zeros, 0, Math.Min(zeros.Length, zeroBytes - written));
            }
        }

        return output.ToArray();
    }

    /// <summary>Posts a request body to a method ("/package.Service/Method"); the status the engine answered with.</summary>
    /// <remarks>With <paramref name="timeoutMs"/>, the call carries that deadline (grpc-timeout): for a stream that would never end by itself.</remarks>
    /// <remarks>Other <paramref name="headers"/> are sent as they are, unchecked.</remarks>
    public static Task<(StatusCode Code, string Message)> SendAsync(HttpClient http, string address, string method, byte[] body, string? key, string? encoding = null, int? timeoutMs = null, IEnumerable<(string Name, string Value)>? headers = null) =>
        SendAsync(http, address, method, new ByteArrayContent(body), key, encoding, timeoutMs, headers);

    /// <inheritdoc cref="SendAsync(HttpClient, string, string, byte[], string?, string?, int?, IEnumerable{ValueTuple{string, string}}?)"/>
    public static async Task<(StatusCode Code, string Message)> SendAsync(HttpClient http, string address, string method, HttpContent body, string? key, string? encoding = null, int? timeoutMs = null, IEnumerable<(string Name, string Value)>? headers = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, address + method)
        {
            Content = body,
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("authorization", "Bearer " + key);
        }

        foreach ((string name, string value) in headers ?? [])
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        if (encoding is not null)
        {
            request.Headers.TryAddWithoutValidation("grpc-encoding", encoding);
        }

        if (timeoutMs is { } timeout)
        {
            request.Headers.TryAddWithoutValidation("grpc-timeout", timeout.ToString(System.Globalization.CultureInfo.InvariantCulture) + "m");
        }

        using HttpResponseMessage response = await http.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        // A refusal before any message is a trailers-only answer: the status is in the headers.
        string? status = Header(response.TrailingHeaders, "grpc-status") ?? Header(response.Headers, "grpc-status");
        string message = Uri.UnescapeDataString(Header(response.TrailingHeaders, "grpc-message") ?? Header(response.Headers, "grpc-message") ?? "");
        return status is null
            ? throw new InvalidOperationException($"HTTP {(int)response.StatusCode} without a gRPC status")
            : ((StatusCode)int.Parse(status, System.Globalization.CultureInfo.InvariantCulture), message);
    }

    private static string? Header(HttpHeaders headers, string name) =>
        headers.TryGetValues(name, out IEnumerable<string>? values) ? values.FirstOrDefault() : null;
}
