using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Grpc.Core;
using HdrHistogram;
using Loyalty.Api;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>
/// Events out during a run: event streams (--subscribers) and a webhook (--webhook) whose
/// receiver is a loopback Kestrel endpoint in this process. Counts what arrives and the delay from
/// the entry's record time (set just before its commit) to its arrival, on this machine's clock.
/// </summary>
internal sealed class EventWatch : IAsyncDisposable
{
    private const long DelayMicrosMax = 600_000_000;

    private readonly LoadOptions _options;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _subscribers = [];
    private readonly LongHistogram _streamDelay = new(DelayMicrosMax, 3);
    private readonly LongHistogram _webhookDelay = new(DelayMicrosMax, 3);
    private readonly Lock _gate = new();
    private WebApplication? _receiver;
    private long _streamEvents, _streamMeasured, _webhookEvents, _webhookMeasured;
    private long _measureFrom = long.MaxValue, _measureTo = long.MaxValue;

    public EventWatch(LoadOptions options) => _options = options;

    /// <summary>Opens the streams and creates the webhook, with the program's admin (or operator) key.</summary>
    public async Task StartAsync(CallInvoker admin)
    {
        for (int i = 0; i < _options.Subscribers; i++)
        {
            var events = new V1.Events.EventsClient(admin);
            AsyncServerStreamingCall<V1.Event> call = events.Subscribe(new V1.SubscribeRequest { ProgramId = _options.Program }, cancellationToken: _stop.Token);
            await call.ResponseHeadersAsync;
            _subscribers.Add(Task.Run(() => ReadAsync(call)));
        }

        if (_options.Webhook)
        {
            string url = await StartReceiverAsync();
            await new V1.Webhooks.WebhooksClient(admin).CreateWebhookAsync(new V1.CreateWebhookRequest { ProgramId = _options.Program, Url = url, WebhookId = "loadtest" });
        }
    }

    /// <summary>Counts from now (the end of the warm-up) on.</summary>
    public void MeasureFrom(long timestamp) => Interlocked.Exchange(ref _measureFrom, timestamp);

    /// <summary>Stops counting (the last purchase was answered).</summary>
    public void MeasureTo(long timestamp) => Interlocked.Exchange(ref _measureTo, timestamp);

    /// <summary>Waits until the streams and the webhook have each seen <paramref name="events"/> events, or <paramref name="timeout"/>.</summary>
    public async Task<double> DrainAsync(long events, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout
            && ((_options.Subscribers > 0 && Interlocked.Read(ref _streamEvents) < events * _options.Subscribers)
                || (_options.Webhook && Interlocked.Read(ref _webhookEvents) < events)))
        {
            await Task.Delay(50);
        }

        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>The report's section.</summary>
    public object Report(double measuredSeconds, double drainSeconds)
    {
        double Ms(LongHistogram h, double p) => h.TotalCount == 0 ? 0 : h.GetValueAtPercentile(p) / 1000.0;
        lock (_gate)
        {
            return new
            {
                subscribers = _options.Subscribers,
                stream = new
                {
                    events = _streamEvents,
                    events_per_s_per_subscriber = _options.Subscribers == 0 ? 0 : Math.Round(_streamMeasured / measuredSeconds / _options.Subscribers, 1),
                    delay_ms = new { p50 = Ms(_streamDelay, 50), p99 = Ms(_streamDelay, 99), max = _streamDelay.TotalCount == 0 ? 0 : _streamDelay.GetMaxValue() / 1000.0 },
                },
                webhook = new
                {
                    enabled = _options.Webhook,
                    delivered = _webhookEvents,
                    delivered_per_s = Math.Round(_webhookMeasured / measuredSeconds, 1),
                    delay_ms = new { p50 = Ms(_webhookDelay, 50), p99 = Ms(_webhookDelay, 99), max = _webhookDelay.TotalCount == 0 ? 0 : _webhookDelay.GetMaxValue() / 1000.0 },
                },
                drained_after_purchases_s = Math.Round(drainSeconds, 3),
            };
        }
    }

    private async Task ReadAsync(AsyncServerStreamingCall<V1.Event> call)
    {
        try
        {
            await foreach (V1.Event e in call.ResponseStream.ReadAllAsync(_stop.Token))
            {
                Count(e.Time.ToDateTimeOffset(), stream: true);
            }
        }
        catch (RpcException) when (_stop.IsCancellationRequested)
        {
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            call.Dispose();
        }
    }

    private void Count(DateTimeOffset recordedAt, bool stream)
    {
        long now = Stopwatch.GetTimestamp();
        long delay = Math.Clamp((long)((DateTimeOffset.UtcNow - recordedAt).TotalMilliseconds * 1000), 0, DelayMicrosMax);
        bool measured = now >= Interlocked.Read(ref _measureFrom) && now <= Interlocked.Read(ref _measureTo);
        lock (_gate)
        {
            if (stream)
            {
                _streamEvents++;
                _streamMeasured += measured ? 1 : 0;
                _streamDelay.RecordValue(delay);
            }
            else
            {
                _webhookEvents++;
                _webhookMeasured += measured ? 1 : 0;
                _webhookDelay.RecordValue(delay);
            }
        }
    }

    private async Task<string> StartReceiverAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = Path.GetTempPath() });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        _receiver = builder.Build();
        _receiver.MapPost("/hooks", async (HttpContext context) =>
        {
            using JsonDocument body = await JsonDocument.ParseAsync(context.Request.Body);
            Count(DateTimeOffset.Parse(body.RootElement.GetProperty("time").GetString()!, CultureInfo.InvariantCulture), stream: false);
            context.Response.StatusCode = 204;
        });
        await _receiver.StartAsync();
        string address = _receiver.Urls.First();
        return address.TrimEnd('/') + "/hooks";
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_subscribers);
        if (_receiver is not null)
        {
            await _receiver.StopAsync();
            await _receiver.DisposeAsync();
        }

        _stop.Dispose();
    }
}
