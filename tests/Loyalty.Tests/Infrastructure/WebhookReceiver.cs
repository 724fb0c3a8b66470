using System.Text.Json;
using Loyalty.Host.Webhooks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Loyalty.Tests.Infrastructure;

/// <summary>One request the receiver got.</summary>
/// <param name="Arrival">Its arrival number (0, 1, 2...).</param>
/// <param name="DeliveryId">The delivery id header.</param>
/// <param name="EventId">The body's event id.</param>
/// <param name="MemberId">The body's member.</param>
/// <param name="Sequence">The ledger sequence of the event's entry.</param>
/// <param name="Type">The body's event type.</param>
/// <param name="Answered">The status the receiver answered; 0 when it hung before answering, -1 when it sent 200 and then stalled the body.</param>
/// <param name="Headers">The signature headers: timestamp, key version, signatures.</param>
/// <param name="Body">The body as sent.</param>
public sealed record ReceivedHook(int Arrival, string DeliveryId, string EventId, string MemberId, long Sequence, string Type, int Answered,
    (string Timestamp, string KeyVersion, string Signatures) Headers, string Body);

/// <summary>
/// A real HTTP receiver of webhooks (Kestrel on a loopback port) that fails a seeded share of
/// requests with 500 and leaves another share hanging past the engine's timeout, and records
/// everything it got.
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Lock _gate = new();
    private readonly List<ReceivedHook> _received = [];
    private readonly Random _random;

    /// <summary>
    /// Cancelled when the receiver is disposed, so that a request it holds ends then instead of
    /// holding the receiver's stop (Kestrel waits for requests under way, up to 30 s).
    /// </summary>
    private readonly CancellationTokenSource _stopping = new();

    private WebhookReceiver(int seed, double failShare, double hangShare, TimeSpan hang, double stallShare)
    {
        StallShare = stallShare;
        _random = new Random(seed);
        FailShare = failShare;
        HangShare = hangShare;
        int port = Ports.Free();
        Url = $"http://127.0.0.1:{port}/hooks";
        // An empty content root: the test folder holds the engine's appsettings.json, whose
        // Kestrel endpoints would take the place of this receiver's.
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = TestDatabases.TempFolder() });
        builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
        builder.Logging.ClearProviders();
        _app = builder.Build();
        _app.MapPost("/hooks", (HttpContext context) => ReceiveAsync(context, hang));
    }

    /// <summary>Where the receiver listens.</summary>
    public string Url { get; }

    /// <summary>The share of requests answered 500 (may be changed while running).</summary>
    public double FailShare { get; set; }

    /// <summary>How long every request takes to answer (a slow receiver).</summary>
    public TimeSpan Delay { get; set; }

    /// <summary>The share of requests answered 200 whose body then stalls past the engine's timeout.</summary>
    public double StallShare { get; set; }

    /// <summary>The share of requests left hanging.</summary>
    public double HangShare { get; set; }

    /// <summary>Requests whose body was not the expected JSON (with why).</summary>
    public System.Collections.Concurrent.ConcurrentBag<string> Unparsable { get; } = [];

    /// <summary>Everything received so far, in arrival order.</summary>
    public IReadOnlyList<ReceivedHook> Received
    {
        get
        {
            lock (_gate)
            {
                return [.. _received];
            }
        }
    }

    /// <summary>Starts a receiver.</summary>
    public static async Task<WebhookReceiver> StartAsync(int seed, double failShare = 0, double hangShare = 0, TimeSpan? hang = null, double stallShare = 0)
    {
        var receiver = new WebhookReceiver(seed, failShare, hangShare, hang ?? TimeSpan.FromSeconds(3), stallShare);
        await receiver._app.StartAsync();
        return receiver;
    }

    /// <summary>
    /// The event ids delivered with a 2xx answer: the engine takes the status line as the answer,
    /// so one whose body then stalled (-1) counts too.
    /// </summary>
    public HashSet<string> DeliveredEventIds() => [.. Received.Where(r => r.Answered is >= 200 and < 300 || r.Answered == -1).Select(r => r.EventId)];

    /// <summary>Waits until every one of <paramref name="eventIds"/> was delivered, or fails after <paramref name="timeout"/>.</summary>
    public async Task WaitForAsync(IReadOnlyCollection<string> eventIds, TimeSpan timeout)
    {
        DateTime until = DateTime.UtcNow + timeout;
        while (true)
        {
            HashSet<string> delivered = DeliveredEventIds();
            string[] missing = [.. eventIds.Where(id => !delivered.Contains(id))];
            if (missing.Length == 0)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < until, $"{missing.Length} of {eventIds.Count} events not delivered within {timeout}, e.g. {string.Join(", ", missing.Take(5))}; " +
                $"received {Received.Count} requests and {Unparsable.Count} unparsable ones: {Unparsable.FirstOrDefault()}");
            await Task.Delay(100);
        }
    }

    private async Task ReceiveAsync(HttpContext context, TimeSpan hang)
    {
        string body;
        using (var reader = new StreamReader(context.Request.Body))
        {
            body = await reader.ReadToEndAsync();
        }

        JsonElement root;
        string entrySequence;
        try
        {
            using JsonDocument json = JsonDocument.Parse(body);
            root = json.RootElement.Clone();
            entrySequence = root.GetProperty("data").GetProperty("entry").TryGetProperty("sequence", out JsonElement seq) ? seq.GetString() ?? "0" : "0";
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            Unparsable.Add(e.Message + ": " + body[..Math.Min(body.Length, 300)]);
            context.Response.StatusCode = 400;
            return;
        }

        (string, string, string) headers = (context.Request.Headers[WebhookSender.TimestampHeader].ToString(),
            context.Request.Headers[WebhookSender.KeyVersionHeader].ToString(), context.Request.Headers[WebhookSender.SignatureHeader].ToString());
        int answer;
        lock (_gate)
        {
            double roll = _random.NextDouble();
            answer = roll < HangShare ? 0 : roll < HangShare + StallShare ? -1 : roll < HangShare + StallShare + FailShare ? 500 : 200;
            _received.Add(new ReceivedHook(_received.Count, context.Request.Headers[WebhookSender.DeliveryHeader].ToString(),
                root.GetProperty("id").GetString()!, root.GetProperty("member_id").GetString()!, long.Parse(entrySequence, System.Globalization.CultureInfo.InvariantCulture),
                root.GetProperty("type").GetString()!, answer, headers, body));
        }

        // A request held here ends when the engine gives up on it (the connection is closed) or
        // when the receiver stops, whichever comes first; what it was going to answer is recorded above.
        using var held = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
        if (!await DelayAsync(Delay, held.Token))
        {
            return;
        }

        if (answer == -1)
        {
            // The status and headers go out at once; the body never comes within the engine's limit.
            context.Response.StatusCode = 200;
            context.Response.ContentLength = 100;
            await context.Response.Body.FlushAsync(held.Token);
            await DelayAsync(hang, held.Token);
            return;
        }

        if (answer == 0)
        {
            // Longer than the engine waits: it gives up on this attempt and retries.
            if (!await DelayAsync(hang, held.Token))
            {
                return;
            }

            answer = 200;
        }

        context.Response.StatusCode = answer;
        await context.Response.WriteAsync(answer == 200 ? "ok" : "try again later");
    }

    /// <summary>Waits <paramref name="delay"/>; false when <paramref name="cancel"/> ended the wait first.</summary>
    private static async Task<bool> DelayAsync(TimeSpan delay, CancellationToken cancel)
    {
        try
        {
            await Task.Delay(delay, cancel);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _stopping.Dispose();
    }
}
