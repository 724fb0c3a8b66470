using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Loyalty.Storage;
using Microsoft.Extensions.Options;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Webhooks;

/// <summary>The outcome of one delivery attempt.</summary>
/// <param name="Delivered">Whether the receiver answered 2xx.</param>
/// <param name="StatusCode">The receiver's HTTP status; 0 when it did not answer.</param>
/// <param name="LatencyMs">How long the attempt took.</param>
/// <param name="Error">Why it failed (bounded), or null.</param>
public sealed record DeliveryOutcome(bool Delivered, int StatusCode, int LatencyMs, string? Error);

/// <summary>
/// Posts one event to one subscription's URL, signed. The request goes to that URL only:
/// redirects are not followed, internal addresses are not reached (<see cref="WebhookTargets"/>),
/// the attempt has a timeout, and at most
/// <see cref="WebhookOptions.ResponseBytesMax"/> bytes of the answer are read.
/// </summary>
public sealed class WebhookSender : IDisposable
{
    /// <summary>The header carrying the delivery id (the same for every attempt of one event to one subscription).</summary>
    public const string DeliveryHeader = "X-Loyalty-Delivery";

    /// <summary>The header carrying the Unix time (seconds) the signature covers.</summary>
    public const string TimestampHeader = "X-Loyalty-Timestamp";

    /// <summary>The header carrying the signatures: "v{version}=hex", comma-separated, newest first.</summary>
    public const string SignatureHeader = "X-Loyalty-Signature";

    /// <summary>The header carrying the newest key version.</summary>
    public const string KeyVersionHeader = "X-Loyalty-Key-Version";

    /// <summary>The header carrying the event type.</summary>
    public const string EventTypeHeader = "X-Loyalty-Event-Type";

    /// <summary>Characters of a failure kept in the delivery log.</summary>
    private const int ErrorCharsMax = 300;

    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true).WithFormatDefaultValues(false));

    private readonly HttpClient _client;
    private readonly WebhookOptions _options;
    private readonly TimeProvider _clock;

    /// <summary>Creates the sender with its own connection pool.</summary>
    public WebhookSender(IOptions<WebhookOptions> options, TimeProvider clock)
    {
        _options = options.Value;
        _clock = clock;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            ConnectTimeout = TimeSpan.FromSeconds(Math.Min(_options.TimeoutSeconds, 10)),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            MaxResponseHeadersLength = 16,
            // No proxy: a delivery connects to the subscription's own host, through the check on its addresses.
            UseProxy = false,
            ConnectCallback = (context, ct) => WebhookTargets.ConnectAsync(context.DnsEndPoint, _options.AllowPrivateTargets, ct),
        };
        // Each attempt has its own limit (SendAsync); this one is only a backstop.
        _client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(_options.TimeoutSeconds + 5) };
    }

    /// <summary>The id of the delivery of an event to a subscription: every attempt carries it.</summary>
    public static string DeliveryIdOf(string webhookId, string eventId) => webhookId + "/" + eventId;

    /// <summary>The JSON body of an event: id, type, time, program, member, cursor, and the event itself as data.</summary>
    public static string BodyOf(V1.Event e)
    {
        var body = new StringBuilder(512);
        body.Append("{\"id\":").Append(Quote(e.EventId))
            .Append(",\"type\":").Append(Quote(e.Type))
            .Append(",\"time\":").Append(Quote(e.Time.ToDateTimeOffset().ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture)))
            .Append(",\"program_id\":").Append(Quote(e.ProgramId))
            .Append(",\"member_id\":").Append(Quote(e.MemberId))
            .Append(",\"cursor\":").Append(Quote(e.Cursor))
            .Append(",\"data\":").Append(Json.Format(e))
            .Append('}');
        return body.ToString();
    }

    /// <summary>HMAC-SHA256 of "timestamp.body" under the secret, lower-case hex.</summary>
    public static string Sign(string secret, long timestamp, string body)
    {
        byte[] signed = Encoding.UTF8.GetBytes(timestamp.ToString(CultureInfo.InvariantCulture) + "." + body);
        return Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), signed));
    }

    /// <summary>The signature header's value: the current secret's, and the previous one's while it is still valid.</summary>
    public static string SignaturesOf(WebhookRow webhook, long timestamp, string body, DateTimeOffset now)
    {
        string signatures = $"v{webhook.KeyVersion}={Sign(webhook.Secret, timestamp, body)}";
        if (webhook.PreviousSecret is { } previous && webhook.PreviousSecretUntil is { } until && now < until)
        {
            signatures += $",v{webhook.KeyVersion - 1}={Sign(previous, timestamp, body)}";
        }

        return signatures;
    }

    /// <summary>The outcome's error when the attempt was abandoned (<see cref="SendAsync"/>).</summary>
    public const string Abandoned = "the node stopped before an answer came; the receiver may have it";

    /// <summary>
    /// Makes one attempt; never throws for the receiver's failures (they are the outcome).
    /// <paramref name="abandon"/> ends the attempt before its time limit (a node that cannot wait
    /// any longer to stop): the outcome is then a failure that says so, not an exception, so that
    /// the delivery log still holds an attempt the receiver may have had.
    /// </summary>
    public async Task<DeliveryOutcome> SendAsync(WebhookRow webhook, V1.Event e, CancellationToken abandon)
    {
        string body = BodyOf(e);
        DateTimeOffset now = _clock.GetUtcNow();
        long timestamp = now.ToUnixTimeSeconds();
        using var request = new HttpRequestMessage(HttpMethod.Post, webhook.Url)
        {
            Content = new StringContent(body, Encoding.UTF8, new MediaTypeHeaderValue("application/json")),
        };
        request.Headers.Add(DeliveryHeader, DeliveryIdOf(webhook.WebhookId, e.EventId));
        request.Headers.Add(EventTypeHeader, e.Type);
        request.Headers.Add(TimestampHeader, timestamp.ToString(CultureInfo.InvariantCulture));
        request.Headers.Add(KeyVersionHeader, webhook.KeyVersion.ToString(CultureInfo.InvariantCulture));
        request.Headers.Add(SignatureHeader, SignaturesOf(webhook, timestamp, body, now));
        long started = Stopwatch.GetTimestamp();
        // One limit for the whole attempt, the answer's body included: a receiver that sends its
        // headers and then stalls must not hold the delivery forever.
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(abandon);
        attempt.CancelAfter(TimeSpan.FromSeconds(_options.TimeoutSeconds));
        try
        {
            using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, attempt.Token);
            int status = (int)response.StatusCode;
            if (response.IsSuccessStatusCode)
            {
                // Accepted by its status line: the body is not read (nothing of it is logged for a
                // success), so a receiver that answers 2xx and never finishes its body is not
                // taken for one that failed, and the event is not sent again.
                return new DeliveryOutcome(true, status, Elapsed(started), null);
            }

            string answer = await ReadBoundedAsync(response, attempt.Token);
            return new DeliveryOutcome(false, status, Elapsed(started), Bounded($"HTTP {status}" + (status is >= 300 and < 400 ? " (redirects are not followed)" : "") + (answer.Length > 0 ? ": " + answer : "")));
        }
        catch (Exception ex)
        {
            // Whatever the receiver or the network did (refused, reset, cut short, too slow) is a failed attempt.
            string why = abandon.IsCancellationRequested ? Abandoned
                : attempt.IsCancellationRequested ? $"no answer within {_options.TimeoutSeconds} s"
                : ex.GetType().Name + ": " + ex.Message;
            return new DeliveryOutcome(false, 0, Elapsed(started), Bounded(why));
        }
    }

    private async Task<string> ReadBoundedAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (_options.ResponseBytesMax == 0)
        {
            return "";
        }

        byte[] buffer = new byte[_options.ResponseBytesMax];
        await using Stream stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        int read = 0;
        while (read < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(read), cancellationToken);
            if (n == 0)
            {
                break;
            }

            read += n;
        }

        return Encoding.UTF8.GetString(buffer, 0, read);
    }

    private static int Elapsed(long started) => (int)Math.Min(int.MaxValue, Stopwatch.GetElapsedTime(started).TotalMilliseconds);

    /// <summary>The text without control characters, cut to <see cref="ErrorCharsMax"/>: safe to store and show.</summary>
    internal static string Bounded(string text)
    {
        string clean = FreeText.HasControl(text) ? new string([.. text.Where(c => !char.IsControl(c))]) : text;
        return clean.Length > ErrorCharsMax ? clean[..ErrorCharsMax] + "…" : clean;
    }

    private static string Quote(string text) => System.Text.Json.JsonSerializer.Serialize(text);

    /// <inheritdoc />
    public void Dispose() => _client.Dispose();
}
