using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Grpc.Core;
using Loyalty.Host.Grpc;

namespace Loyalty.Host.Access;

/// <summary>
/// An HTTP/JSON call's body, read whole (within its limit) and walked (<see cref="JsonShape"/>)
/// before JSON transcoding parses it; and its error answers, bounded before they are sent. JSON
/// transcoding reads and converts the body before any interceptor runs, and answers what it cannot
/// convert (an enum's name, a number, a field it does not know) by quoting it whole.
/// </summary>
public static class JsonBodies
{
    /// <summary>The first buffer a body is read into; it doubles as the body arrives, up to its limit.</summary>
    private const int FirstBufferBytes = 16 * 1024;

    /// <summary>
    /// Where an HTTP/JSON call keeps, in its <c>HttpContext.Items</c>, whether it reached the
    /// interceptor (its message parsed): a <see cref="StrongBox{T}"/> of bool the interceptor sets.
    /// Only HTTP/JSON calls carry it, so a gRPC call costs the interceptor one lookup, no write.
    /// </summary>
    public const string SeenItem = "loyalty.json.seen";

    /// <summary>Bytes of an error answer kept to be bounded; an answer longer than this is replaced whole.</summary>
    private const int ErrorAnswerBytesMax = 64 * 1024;

    /// <summary>
    /// Reads the body of an HTTP/JSON call of <paramref name="method"/> and checks its shape; on
    /// success the request reads the same bytes from memory, and null is returned. Otherwise the
    /// refusal, for the caller to answer; nothing of the body is quoted in it.
    /// </summary>
    public static async Task<(StatusCode Code, string Message)?> ReadAndCheckAsync(HttpContext context, string method)
    {
        HttpRequest request = context.Request;
        long limit = KeyFirst.JsonBodyBytesMaxOf(method);
        if (request.ContentLength > limit)
        {
            // Refused before a byte is read: a client that waits for "100 Continue" never sends it.
            return TooLarge(method, limit);
        }

        // Sized by what arrives, not by the length the client declares (a declared 4 MiB that
        // trickles in would otherwise hold 4 MiB from its first byte).
        byte[] buffer = ArrayPool<byte>.Shared.Rent(FirstBufferBytes);
        bool owned = true;
        try
        {
            int length = 0;
            while (true)
            {
                int room = (int)Math.Min(buffer.Length, limit) - length;
                if (room == 0)
                {
                    if (length >= limit)
                    {
                        // Full at the limit: one byte more is a body over it.
                        if (await request.Body.ReadAsync(new byte[1], context.RequestAborted) > 0)
                        {
                            return TooLarge(method, limit);
                        }

                        break;
                    }

                    byte[] larger = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)buffer.Length * 2, limit));
                    buffer.AsSpan(0, length).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                    continue;
                }

                int read = await request.Body.ReadAsync(buffer.AsMemory(length, room), context.RequestAborted);
                if (read == 0)
                {
                    break;
                }

                length += read;
            }

            if (length > 0 && JsonShape.Check(buffer.AsSpan(0, length)) is { } refused)
            {
                return refused;
            }

            request.Body = new MemoryStream(buffer, 0, length, writable: false);
            context.Response.RegisterForDispose(new Returned(buffer));
            owned = false;
            return null;
        }
        catch (BadHttpRequestException e)
        {
            // Kestrel's own limits (the body's size, its rate): its message names no client text.
            return e.StatusCode == StatusCodes.Status413PayloadTooLarge ? TooLarge(method, limit) : (StatusCode.InvalidArgument, Bounded.Detail(e.Message));
        }
        finally
        {
            // On a refusal, and when the read fails or is cancelled (the client went away).
            if (owned)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>
    /// Runs an HTTP/JSON call with its error answers bounded: an answer of status 400 or more is
    /// held, and sent with its message cut to <see cref="Bounded.DetailLengthMax"/> characters. An
    /// answer that did not reach the call's interceptor (JSON transcoding's own refusal of a body
    /// it could not convert) is counted as the client's fault.
    /// </summary>
    public static async Task RunBoundedAsync(HttpContext context, RequestDelegate next, string method)
    {
        var seen = new StrongBox<bool>();
        context.Items[SeenItem] = seen;
        Stream original = context.Response.Body;
        var held = new ErrorAnswerStream(context.Response, original);
        context.Response.Body = held;
        try
        {
            await next(context);
        }
        finally
        {
            context.Response.Body = original;
        }

        if (held.Held is { Length: > 0 } answer)
        {
            await SendBoundedAsync(context, answer, held.Overflowed, method, seen.Value);
        }
    }

    /// <summary>The call's refused answer, as JSON transcoding wrote it, with its message bounded.</summary>
    private static async Task SendBoundedAsync(HttpContext context, MemoryStream answer, bool overflowed, string method, bool seen)
    {
        (int code, string? message) = ReadStatus(answer.GetBuffer().AsSpan(0, (int)answer.Length));
        string bounded = message is null ? "the request was refused; its message was too long to send" : Bounded.Detail(message);
        if (!seen)
        {
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.Malformed, method, bounded);
        }

        HttpResponse response = context.Response;
        if (!overflowed && message is not null && message.Length <= Bounded.DetailLengthMax)
        {
            // Within bounds: sent as it was written.
            if (!response.HasStarted)
            {
                response.ContentLength = answer.Length;
            }

            await response.Body.WriteAsync(answer.GetBuffer().AsMemory(0, (int)answer.Length));
            return;
        }

        byte[] json = KeyFirst.StatusBody(code, bounded);
        if (!response.HasStarted)
        {
            response.ContentLength = json.Length;
        }

        await response.Body.WriteAsync(json);
    }

    /// <summary>The <c>code</c> and <c>message</c> of a google.rpc.Status written as JSON (the code 2, UNKNOWN, when not found); the message null when the JSON is cut short.</summary>
    private static (int Code, string? Message) ReadStatus(ReadOnlySpan<byte> json)
    {
        int code = (int)StatusCode.Unknown;
        string? message = null;
        var reader = new Utf8JsonReader(json, isFinalBlock: false, default);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
                {
                    continue;
                }

                if (reader.ValueTextEquals("code") && reader.Read() && reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int read))
                {
                    code = read;
                }
                else if (reader.ValueTextEquals("message") && reader.Read() && reader.TokenType == JsonTokenType.String)
                {
                    message = reader.GetString();
                }
            }
        }
        catch (JsonException)
        {
            // Not JSON, or cut short: what was read stands.
        }

        return (code, message);
    }

    private static (StatusCode, string) TooLarge(string method, long limit) =>
        (StatusCode.ResourceExhausted, $"the request body is larger than {limit} bytes, the most {method} takes over HTTP/JSON");

    /// <summary>Gives a body's buffer back to the pool when the request ends.</summary>
    private sealed class Returned(byte[] buffer) : IDisposable
    {
        public void Dispose() => ArrayPool<byte>.Shared.Return(buffer);
    }

    /// <summary>
    /// The response body while an HTTP/JSON call runs: an answer whose status is 400 or more is
    /// held in memory (up to <see cref="ErrorAnswerBytesMax"/>), any other goes through as written.
    /// </summary>
    private sealed class ErrorAnswerStream(HttpResponse response, Stream inner) : Stream
    {
        private bool? _holding;

        /// <summary>The held answer; null when the answer went through.</summary>
        public MemoryStream? Held { get; private set; }

        /// <summary>Whether the held answer was longer than what was kept of it.</summary>
        public bool Overflowed { get; private set; }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        private bool Holding
        {
            get
            {
                if (_holding is not { } holding)
                {
                    holding = response.StatusCode >= StatusCodes.Status400BadRequest && !response.HasStarted;
                    _holding = holding;
                    if (holding)
                    {
                        Held = new MemoryStream();
                    }
                }

                return holding;
            }
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (!Holding)
            {
                inner.Write(buffer);
                return;
            }

            Hold(buffer);
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!Holding)
            {
                return inner.WriteAsync(buffer, cancellationToken);
            }

            Hold(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        // A flush decides as a write does: one before the first write (the response started
        // early) would otherwise send an error answer's headers before its body is bounded.
        public override void Flush()
        {
            if (!Holding)
            {
                inner.Flush();
            }
        }

        public override Task FlushAsync(CancellationToken cancellationToken) =>
            Holding ? Task.CompletedTask : inner.FlushAsync(cancellationToken);

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        private void Hold(ReadOnlySpan<byte> buffer)
        {
            int room = (int)Math.Max(0, ErrorAnswerBytesMax - Held!.Length);
            Held.Write(buffer[..Math.Min(room, buffer.Length)]);
            Overflowed |= buffer.Length > room;
        }
    }
}
