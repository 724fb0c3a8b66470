using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using HdrHistogram;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>One benchmark run: set up a program and members, stream, measure, verify, report.</summary>
internal sealed class LoadRun(LoadOptions options)
{
    private const int SetupConcurrency = 64;

    /// <summary>Largest latency the histogram tracks; latencies are recorded in microseconds.</summary>
    private const long LatencyMicrosMax = 3_600_000_000;

    private const int LatencySignificantDigits = 3;

    /// <summary>Purchases cycle through this many stores and this many distinct amounts.</summary>
    private const int StoreCount = 50;

    private const int AmountSpreadMinor = 20_000;
    private readonly string _runId = Guid.NewGuid().ToString("N")[..6];
    private readonly long[] _expectedPoints = new long[options.Members];
    private readonly ConcurrentDictionary<string, long> _errors = new();
    private long _sent;
    private long _acked;

    public async Task<int> RunAsync()
    {
        using var channel = GrpcChannel.ForAddress(options.Target, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
        });
        await SetUpAsync(channel);
        Console.Error.WriteLine($"loadtest: {options.Streams} streams, mode {options.Mode}, up to {options.Events} events or {options.DurationSeconds}s");

        var purchases = new V1.Purchases.PurchasesClient(channel);
        long eventsPerStream = Math.Max(1, options.Events / options.Streams);
        var histograms = new LongHistogram[options.Streams];
        var clock = Stopwatch.StartNew();
        using var progress = new Timer(_ => PrintProgress(clock), null, 1000, 1000);
        Task[] streams = [.. Enumerable.Range(0, options.Streams).Select(s => Task.Run(async () =>
            histograms[s] = await RunStreamAsync(purchases, s, eventsPerStream, clock)))];
        await Task.WhenAll(streams);
        double seconds = clock.Elapsed.TotalSeconds;

        var latency = NewHistogram();
        foreach (LongHistogram h in histograms)
        {
            latency.Add(h);
        }

        (bool ok, long mismatched, long checkedMembers) = options.Verify ? await VerifyAsync(channel) : (true, 0, 0);
        return Report(latency, seconds, ok, mismatched, checkedMembers);
    }

    private async Task SetUpAsync(GrpcChannel channel)
    {
        var programs = new V1.ProgramAdmin.ProgramAdminClient(channel);
        await programs.PutProgramAsync(new V1.PutProgramRequest
        {
            ProgramId = options.Program,
            Settings = new V1.ProgramSettings { Name = "Load test", Currency = "USD", CurrencyExponent = 2, EarnPointsPerUnit = 1 },
        });
        var members = new V1.Members.MembersClient(channel);
        var clock = Stopwatch.StartNew();
        await Parallel.ForAsync(0, options.Members, new ParallelOptions { MaxDegreeOfParallelism = SetupConcurrency }, async (m, ct) =>
            await members.EnrollAsync(new V1.EnrollRequest { ProgramId = options.Program, MemberId = MemberId(m) }, cancellationToken: ct));
        Console.Error.WriteLine($"loadtest: enrolled {options.Members} members in {clock.Elapsed.TotalSeconds:F1}s");
    }

    private async Task<LongHistogram> RunStreamAsync(V1.Purchases.PurchasesClient client, int stream, long count, Stopwatch clock)
    {
        LongHistogram histogram = NewHistogram();
        var startedAt = new long[count];
        var members = new int[count];
        var picker = new MemberPicker(options.Members, options.ZipfSkew, seed: stream + 1);
        using var slots = new SemaphoreSlim(options.InFlightPerStream);
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> call = client.Ingest();
        Task reader = Task.Run(async () =>
        {
            await foreach (V1.PurchaseAck ack in call.ResponseStream.ReadAllAsync())
            {
                long k = long.Parse(ack.TransactionId.AsSpan(ack.TransactionId.LastIndexOf('-') + 1), CultureInfo.InvariantCulture);
                histogram.RecordValue(Math.Max(0, (Stopwatch.GetTimestamp() - startedAt[k]) * 1_000_000 / Stopwatch.Frequency));
                Interlocked.Increment(ref _acked);
                if (ack.Status == V1.AckStatus.Accepted)
                {
                    Interlocked.Add(ref _expectedPoints[members[k]], ack.PointsEarned);
                }
                else
                {
                    _errors.AddOrUpdate(ack.Status == V1.AckStatus.Duplicate ? "DUPLICATE" : ack.ErrorCode, 1, (_, n) => n + 1);
                }

                slots.Release();
            }
        });

        double perStreamRate = options.RatePerSecond / options.Streams;
        long streamStart = Stopwatch.GetTimestamp();
        for (long k = 0; k < count && clock.Elapsed.TotalSeconds < options.DurationSeconds; k++)
        {
            await slots.WaitAsync();
            long now = Stopwatch.GetTimestamp();
            if (options.Mode == "rate")
            {
                // Open loop: latency counts from the intended send time (no coordinated omission).
                long intended = streamStart + (long)(k / perStreamRate * Stopwatch.Frequency);
                if (intended > now)
                {
                    await Task.Delay(TimeSpan.FromTicks((intended - now) * TimeSpan.TicksPerSecond / Stopwatch.Frequency));
                }

                now = intended;
            }

            int member = picker.Next();
            members[k] = member;
            startedAt[k] = now;
            await call.RequestStream.WriteAsync(Purchase(stream, k, member));
            Interlocked.Increment(ref _sent);
        }

        await call.RequestStream.CompleteAsync();
        await reader;
        return histogram;
    }

    private V1.Purchase Purchase(int stream, long k, int member) => new()
    {
        TransactionId = $"{_runId}-{stream}-{k}",
        ProgramId = options.Program,
        MemberId = MemberId(member),
        StoreId = "store-" + (k % StoreCount).ToString(CultureInfo.InvariantCulture),
        AmountMinor = 1_00 + (k % AmountSpreadMinor),
        Currency = "USD",
        OccurredAt = Timestamp.FromDateTime(DateTime.UtcNow),
    };

    private async Task<(bool Ok, long Mismatched, long Checked)> VerifyAsync(GrpcChannel channel)
    {
        var client = new V1.Members.MembersClient(channel);
        long mismatched = 0;
        await Parallel.ForAsync(0, options.Members, new ParallelOptions { MaxDegreeOfParallelism = SetupConcurrency }, async (m, ct) =>
        {
            V1.Member member = await client.GetMemberAsync(new V1.GetMemberRequest { ProgramId = options.Program, MemberId = MemberId(m) }, cancellationToken: ct);
            if (member.Balance != Interlocked.Read(ref _expectedPoints[m]))
            {
                Interlocked.Increment(ref mismatched);
            }
        });
        return (mismatched == 0, mismatched, options.Members);
    }

    private int Report(LongHistogram latency, double seconds, bool ok, long mismatched, long checkedMembers)
    {
        double Ms(double percentile) => latency.TotalCount == 0 ? 0 : latency.GetValueAtPercentile(percentile) / 1000.0;
        var report = new
        {
            events_sent = _sent,
            events_acked = _acked,
            errors = _errors.ToDictionary(e => e.Key, e => e.Value),
            duration_s = Math.Round(seconds, 3),
            throughput_per_s = Math.Round(_acked / seconds, 1),
            latency_ms = new { p50 = Ms(50), p90 = Ms(90), p99 = Ms(99), p999 = Ms(99.9), max = latency.TotalCount == 0 ? 0 : latency.GetMaxValue() / 1000.0 },
            verify = new { ok = ok && _errors.IsEmpty && _acked == _sent, members_checked = checkedMembers, members_mismatched = mismatched },
            config = new { options.Mode, options.Streams, options.InFlightPerStream, options.Members, options.ZipfSkew, options.RatePerSecond, options.Target },
        };
        string json = JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true });
        Console.WriteLine(json);
        if (options.JsonPath is not null)
        {
            File.WriteAllText(options.JsonPath, json);
        }

        return report.verify.ok ? 0 : 1;
    }

    private void PrintProgress(Stopwatch clock) =>
        Console.Error.WriteLine($"loadtest: {clock.Elapsed.TotalSeconds,6:F1}s  sent {Interlocked.Read(ref _sent),10}  acked {Interlocked.Read(ref _acked),10}  " +
            $"{Interlocked.Read(ref _acked) / Math.Max(0.001, clock.Elapsed.TotalSeconds),10:F0} ev/s");

    private static LongHistogram NewHistogram() => new(LatencyMicrosMax, LatencySignificantDigits);

    private static string MemberId(int m) => "lm" + m.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Picks members uniformly or with Zipf-distributed popularity.</summary>
internal sealed class MemberPicker
{
    private readonly Random _random;
    private readonly double[]? _cumulative;
    private readonly int _members;

    public MemberPicker(int members, double skew, int seed)
    {
        _random = new Random(seed);
        _members = members;
        if (skew > 0)
        {
            _cumulative = new double[members];
            double sum = 0;
            for (int i = 0; i < members; i++)
            {
                sum += 1.0 / Math.Pow(i + 1, skew);
                _cumulative[i] = sum;
            }

            for (int i = 0; i < members; i++)
            {
                _cumulative[i] /= sum;
            }
        }
    }

    public int Next()
    {
        if (_cumulative is null)
        {
            return _random.Next(_members);
        }

        int index = Array.BinarySearch(_cumulative, _random.NextDouble());
        return Math.Min(index < 0 ? ~index : index, _members - 1);
    }
}
