using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using HdrHistogram;
using Spectre.Console;
using Loyalty.Api;
using V1 = Loyalty.Api.V1;

namespace Loyalty.LoadTest;

/// <summary>
/// One benchmark run: (optionally start an engine,) set up a program and members, stream a POS
/// mix of purchases (and some returns and redemptions), measure every ack, verify the balances, report.
/// </summary>
internal sealed class LoadRun(LoadOptions options)
{
    private const int SetupConcurrency = 64;
    /// <summary>Workers sending the returns and redemptions that follow accepted purchases.</summary>
    private const int FollowUpWorkers = 8;

    /// <summary>Largest latency the histogram tracks; latencies are recorded in microseconds.</summary>
    private const long LatencyMicrosMax = 3_600_000_000;

    private const int LatencySignificantDigits = 3;

    private readonly string _runId = Guid.NewGuid().ToString("N")[..6];
    private readonly long[] _expectedPoints = new long[options.Members];
    private readonly ConcurrentDictionary<string, long> _errors = new();
    private readonly Channel<FollowUp> _followUps = Channel.CreateUnbounded<FollowUp>();
    private readonly List<LongHistogram> _histograms = [];
    private readonly List<LongHistogram> _allHistograms = [];
    private readonly List<TimelinePoint> _timeline = [];
    private long _sent;
    private long _acked;
    private long _ackedMeasured;
    private long _measureFrom = long.MaxValue;
    private double _warmupUsed = options.WarmupSeconds;
    private long _returnsSent;
    private long _returnsAcked;
    /// <summary>When the last purchase stream ended, and when the last follow-up was answered (Stopwatch ticks).</summary>
    private long _purchasesEndedAt, _followUpsEndedAt, _startedAt;
    private long _redemptionsSent;
    private long _redemptionsAccepted;
    private long _redemptionsRefused;

    /// <summary>A return of part of an accepted purchase (a SKU, or an amount), or a redemption by its member.</summary>
    private readonly record struct FollowUp(int Member, string Original, string Sku, long AmountMinor, bool Redeem);

    /// <summary>One second of the run: when, how many acks so far, throughput in that second, p99 so far.</summary>
    internal readonly record struct TimelinePoint(double Seconds, long Acked, double PerSecond, double P99Ms);

    public async Task<int> RunAsync()
    {
        await using EngineProcess? engine = options.Spawn is null ? null : await EngineProcess.StartAsync(options.Spawn, options.Postgres, options.EngineArgs);
        if (engine is not null)
        {
            options.Target = engine.Target;
            Log($"started an engine on {options.Spawn} at {engine.Target}");
        }

        using var channel = GrpcChannel.ForAddress(options.Target, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
        });
        // The program is set up with the operator's (or the program admin's) key; the load runs
        // with a POS key made for the run, as a till would.
        CallInvoker till = channel.WithKey(await SetUpAsync(channel, engine?.OperatorKey ?? options.ResolveKey()));
        Log($"{options.Streams} streams, mode {options.Mode}, up to {options.Events} events or {options.DurationSeconds}s");

        var clock = Stopwatch.StartNew();
        _startedAt = Stopwatch.GetTimestamp();
        _measureFrom = _startedAt + (long)(options.WarmupSeconds * Stopwatch.Frequency);
        Task run = RunLoadAsync(till, clock);
        await ShowProgressAsync(run, clock);
        await run;
        // Purchase throughput covers the purchases only: returns and redemptions still being
        // answered after the last purchase are reported on their own.
        double seconds = Math.Max(0.001, Seconds(Math.Min(_measureFrom, _purchasesEndedAt), _purchasesEndedAt));
        LongHistogram measured = Merged(_histograms);
        if (measured.TotalCount == 0)
        {
            // The run ended inside the warm-up: report the whole run rather than nothing.
            Log("the run ended before the warm-up did; the figures cover the whole run");
            (measured, seconds, _ackedMeasured, _warmupUsed) = (Merged(_allHistograms), Math.Max(0.001, Seconds(_startedAt, _purchasesEndedAt)), _acked, 0);
        }

        (bool ok, long mismatched, long checkedMembers) = options.Verify ? await VerifyAsync(till) : (true, 0, 0);
        return Report(measured, seconds, ok, mismatched, checkedMembers, engine?.PeakWorkingSetMiB);
    }

    private async Task RunLoadAsync(CallInvoker channel, Stopwatch clock)
    {
        var purchases = new V1.Purchases.PurchasesClient(channel);
        long eventsPerStream = Math.Max(1, options.Events / options.Streams);
        var redemptions = new V1.Redemptions.RedemptionsClient(channel);
        Task[] followUps = [.. Enumerable.Range(0, FollowUpWorkers).Select(_ => Task.Run(() => FollowUpWorkerAsync(purchases, redemptions)))];
        Task[] streams = [.. Enumerable.Range(0, options.Streams).Select(s => Task.Run(() => RunStreamAsync(purchases, s, eventsPerStream, clock)))];
        await Task.WhenAll(streams);
        _purchasesEndedAt = Stopwatch.GetTimestamp();
        _followUps.Writer.Complete();
        await Task.WhenAll(followUps);
        _followUpsEndedAt = Stopwatch.GetTimestamp();
    }

    private static double Seconds(long from, long to) => (to - from) / (double)Stopwatch.Frequency;

    /// <summary>Puts the program, makes a POS key for the run and enrols the members with it; returns the key.</summary>
    private async Task<string> SetUpAsync(GrpcChannel channel, string adminKey)
    {
        CallInvoker admin = channel.WithKey(adminKey);
        var programs = new V1.ProgramAdmin.ProgramAdminClient(admin);
        await programs.PutProgramAsync(PosMix.Program(options.Program));
        V1.CreatedKey key = await new V1.Access.AccessClient(admin).CreateKeyAsync(new V1.CreateKeyRequest
        {
            ProgramId = options.Program,
            Scope = V1.KeyScope.Pos,
            Name = "load test " + DateTimeOffset.UtcNow.ToString("u", CultureInfo.InvariantCulture),
            ExpiresAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddDays(1)),
        });
        var members = new V1.Members.MembersClient(channel.WithKey(key.Secret));
        var clock = Stopwatch.StartNew();
        await Parallel.ForAsync(0, options.Members, new ParallelOptions { MaxDegreeOfParallelism = SetupConcurrency }, async (m, ct) =>
            await Quota.RetryAsync(() => members.EnrollAsync(new V1.EnrollRequest { ProgramId = options.Program, MemberId = MemberId(m) }, cancellationToken: ct).ResponseAsync, ct));
        Log($"enrolled {options.Members} members in {clock.Elapsed.TotalSeconds:F1}s");
        return key.Secret;
    }

    private async Task RunStreamAsync(V1.Purchases.PurchasesClient client, int stream, long count, Stopwatch clock)
    {
        LongHistogram histogram = NewHistogram(), all = NewHistogram();
        lock (_histograms)
        {
            _histograms.Add(histogram);
            _allHistograms.Add(all);
        }

        var startedAt = new long[count];
        var baskets = new PosMix.Basket[count];
        MemberPicker picker = options.Sequential
            ? MemberPicker.InTurn(options.Members, first: stream, step: options.Streams)
            : new MemberPicker(options.Members, options.ZipfSkew, seed: stream + 1);
        var mix = new PosMix(options.LinesMax, options.Stores, seed: stream + 1);
        var returnDice = new Random(stream + 1_000);
        using var slots = new SemaphoreSlim(options.InFlightPerStream);
        using var sink = new PurchaseSink(client, options.Batch);
        // Cancelled when the ack stream fails, so that the send loop stops waiting for slots that will never come back.
        using var readerFailed = new CancellationTokenSource();
        void Acked(V1.PurchaseAck ack)
        {
            long k = long.Parse(ack.TransactionId.AsSpan(ack.TransactionId.LastIndexOf('-') + 1), CultureInfo.InvariantCulture);
            // Events sent during the warm-up count for verification, not for the figures.
            long micros = Math.Max(0, (Stopwatch.GetTimestamp() - startedAt[k]) * 1_000_000 / Stopwatch.Frequency);
            lock (all)
            {
                all.RecordValue(micros);
                if (startedAt[k] >= _measureFrom)
                {
                    histogram.RecordValue(micros);
                    Interlocked.Increment(ref _ackedMeasured);
                }
            }

            OnAck(ack, baskets[k], returnDice);
            slots.Release();
        }

        Task reader = Task.Run(async () =>
        {
            try
            {
                await sink.ReadAcksAsync(Acked);
            }
            catch
            {
                await readerFailed.CancelAsync();
                throw;
            }
        });
        double perStreamRate = options.RatePerSecond / options.Streams;
        long streamStart = Stopwatch.GetTimestamp();
        for (long k = 0; k < count && clock.Elapsed.TotalSeconds < options.DurationSeconds && !readerFailed.IsCancellationRequested; k++)
        {
            try
            {
                await slots.WaitAsync(readerFailed.Token);
            }
            catch (OperationCanceledException)
            {
                break; // the reader's own exception is raised below
            }

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

            PosMix.Basket basket = mix.Next(picker.Next());
            baskets[k] = basket;
            startedAt[k] = now;
            await sink.SendAsync(Purchase(stream, k, basket));
            Interlocked.Increment(ref _sent);
        }

        if (!readerFailed.IsCancellationRequested)
        {
            await sink.CompleteAsync();
        }

        await reader;
    }

    private void OnAck(V1.PurchaseAck ack, PosMix.Basket basket, Random returnDice)
    {
        Interlocked.Increment(ref _acked);
        if (ack.Status != V1.AckStatus.Accepted)
        {
            _errors.AddOrUpdate(ack.Status == V1.AckStatus.Duplicate ? "DUPLICATE" : ack.ErrorCode, 1, (_, n) => n + 1);
            return;
        }

        Interlocked.Add(ref _expectedPoints[basket.Member], ack.PointsEarned);
        if (options.ReturnShare > 0 && returnDice.NextDouble() < options.ReturnShare)
        {
            (string sku, long amount) = basket.Lines.Length > 0 ? (basket.Lines[0].Sku, basket.Lines[0].AmountMinor) : ("", Math.Max(1, basket.AmountMinor / 2));
            _followUps.Writer.TryWrite(new FollowUp(basket.Member, ack.TransactionId, sku, amount, Redeem: false));
        }

        if (options.RedemptionShare > 0 && returnDice.NextDouble() < options.RedemptionShare)
        {
            _followUps.Writer.TryWrite(new FollowUp(basket.Member, ack.TransactionId, "", 0, Redeem: true));
        }
    }

    private async Task FollowUpWorkerAsync(V1.Purchases.PurchasesClient purchases, V1.Redemptions.RedemptionsClient redemptions)
    {
        await foreach (FollowUp followUp in _followUps.Reader.ReadAllAsync())
        {
            await (followUp.Redeem ? RedeemAsync(redemptions, followUp) : ReturnAsync(purchases, followUp));
        }
    }

    /// <summary>Redeems the 10-point reward for the purchase's member; a refusal for want of points is not an error.</summary>
    private async Task RedeemAsync(V1.Redemptions.RedemptionsClient client, FollowUp r)
    {
        Interlocked.Increment(ref _redemptionsSent);
        try
        {
            V1.RedemptionAck ack = await client.RedeemAsync(new V1.RedeemRequest
            {
                TransactionId = "x-" + r.Original, ProgramId = options.Program, MemberId = MemberId(r.Member), RewardId = PosMix.RewardId, StoreId = "store-0",
            });
            Interlocked.Add(ref _expectedPoints[r.Member], -ack.Points);
            Interlocked.Increment(ref _redemptionsAccepted);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.FailedPrecondition)
        {
            Interlocked.Increment(ref _redemptionsRefused);
        }
        catch (RpcException e)
        {
            _errors.AddOrUpdate("redeem:" + e.StatusCode, 1, (_, n) => n + 1);
        }
    }

    /// <summary>Returns part of an accepted purchase: its first line, or half its amount.</summary>
    private async Task ReturnAsync(V1.Purchases.PurchasesClient client, FollowUp r)
    {
        var request = new V1.ReturnRequest
        {
            TransactionId = "r-" + r.Original,
            ProgramId = options.Program,
            MemberId = MemberId(r.Member),
            OriginalTransactionId = r.Original,
            StoreId = "store-0",
            Currency = "USD",
            OccurredAt = Timestamp.FromDateTime(DateTime.UtcNow),
        };
        if (r.Sku.Length > 0)
        {
            request.Lines.Add(new V1.ReturnLine { Sku = r.Sku, Quantity = 1, AmountMinor = r.AmountMinor });
        }
        else
        {
            request.AmountMinor = r.AmountMinor;
        }

        Interlocked.Increment(ref _returnsSent);
        try
        {
            V1.ReturnAck ack = await client.ReturnAsync(request);
            Interlocked.Add(ref _expectedPoints[r.Member], -ack.PointsReversed);
            Interlocked.Increment(ref _returnsAcked);
        }
        catch (RpcException e)
        {
            _errors.AddOrUpdate("return:" + e.StatusCode, 1, (_, n) => n + 1);
        }
    }

    private V1.Purchase Purchase(int stream, long k, PosMix.Basket basket)
    {
        var purchase = new V1.Purchase
        {
            TransactionId = $"{_runId}-{stream}-{k}",
            ProgramId = options.Program,
            MemberId = MemberId(basket.Member),
            StoreId = basket.Store,
            AmountMinor = basket.AmountMinor,
            Currency = "USD",
            OccurredAt = Timestamp.FromDateTime(DateTime.UtcNow),
            Channel = V1.Channel.Store,
        };
        foreach (PosMix.Line line in basket.Lines)
        {
            purchase.LineItems.Add(new V1.LineItem { Sku = line.Sku, Category = line.Category, Quantity = 1, AmountMinor = line.AmountMinor });
        }

        return purchase;
    }

    /// <summary>Shows progress once a second until the run ends: a live line on a terminal, plain lines otherwise.</summary>
    private async Task ShowProgressAsync(Task run, Stopwatch clock)
    {
        if (options.Quiet || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            while (!run.IsCompleted)
            {
                await Task.WhenAny(run, Task.Delay(1000));
                TimelinePoint point = Sample(clock);
                if (!options.Quiet)
                {
                    Log($"{point.Seconds,6:F1}s  sent {Interlocked.Read(ref _sent),10}  acked {point.Acked,10}  {point.PerSecond,8:F0} ev/s  p99 {point.P99Ms,8:F1} ms");
                }
            }

            return;
        }

        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        await console.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                ProgressTask task = context.AddTask("starting", maxValue: options.Events);
                while (!run.IsCompleted)
                {
                    await Task.WhenAny(run, Task.Delay(1000));
                    TimelinePoint point = Sample(clock);
                    task.Value = Math.Max(point.Acked, clock.Elapsed.TotalSeconds / options.DurationSeconds * options.Events);
                    task.Description = $"{point.Acked,10:N0} acked  {point.PerSecond,8:N0} ev/s  p99 {point.P99Ms,7:F1} ms";
                }

                task.Value = options.Events;
            });
    }

    private TimelinePoint Sample(Stopwatch clock)
    {
        long acked = Interlocked.Read(ref _acked);
        double seconds = clock.Elapsed.TotalSeconds;
        TimelinePoint previous = _timeline.Count > 0 ? _timeline[^1] : default;
        LongHistogram merged = Merged(_allHistograms);
        double p99 = merged.TotalCount == 0 ? 0 : merged.GetValueAtPercentile(99) / 1000.0;
        var point = new TimelinePoint(seconds, acked, (acked - previous.Acked) / Math.Max(0.001, seconds - previous.Seconds), p99);
        _timeline.Add(point);
        return point;
    }

    private LongHistogram Merged(List<LongHistogram> histograms)
    {
        LongHistogram merged = NewHistogram();
        lock (_histograms)
        {
            for (int i = 0; i < histograms.Count; i++)
            {
                // Each stream's pair is guarded by its "all" histogram (see RunStreamAsync).
                lock (_allHistograms[i])
                {
                    merged.Add(histograms[i]);
                }
            }
        }

        return merged;
    }

    private async Task<(bool Ok, long Mismatched, long Checked)> VerifyAsync(CallInvoker channel)
    {
        var client = new V1.Members.MembersClient(channel);
        long mismatched = 0;
        var clock = Stopwatch.StartNew();
        await Parallel.ForAsync(0, options.Members, new ParallelOptions { MaxDegreeOfParallelism = SetupConcurrency }, async (m, ct) =>
        {
            V1.Member member = await Quota.RetryAsync(() => client.GetMemberAsync(new V1.GetMemberRequest { ProgramId = options.Program, MemberId = MemberId(m) }, cancellationToken: ct).ResponseAsync, ct);
            if (member.Balance + member.PendingPoints != Interlocked.Read(ref _expectedPoints[m]))
            {
                Interlocked.Increment(ref mismatched);
            }
        });
        Log($"verified {options.Members} members in {clock.Elapsed.TotalSeconds:F1}s ({options.Members / Math.Max(0.001, clock.Elapsed.TotalSeconds):F0} members/s, {SetupConcurrency} reads at a time)");
        return (mismatched == 0, mismatched, options.Members);
    }

    private int Report(LongHistogram latency, double seconds, bool ok, long mismatched, long checkedMembers, double? peakMiB)
    {
        double Ms(double percentile) => latency.TotalCount == 0 ? 0 : latency.GetValueAtPercentile(percentile) / 1000.0;
        var report = new
        {
            events_sent = _sent,
            events_acked = _acked,
            errors = _errors.ToDictionary(e => e.Key, e => e.Value),
            duration_s = Math.Round(seconds, 3),
            warmup_s = _warmupUsed,
            throughput_per_s = Math.Round(_ackedMeasured / seconds, 1),
            latency_ms = new { p50 = Ms(50), p90 = Ms(90), p99 = Ms(99), p999 = Ms(99.9), max = latency.TotalCount == 0 ? 0 : latency.GetMaxValue() / 1000.0 },
            verify = new { ok = ok && _errors.IsEmpty && _acked == _sent, members_checked = checkedMembers, members_mismatched = mismatched },
            returns = new { sent = _returnsSent, acked = _returnsAcked },
            redemptions = new { sent = _redemptionsSent, accepted = _redemptionsAccepted, refused_for_points = _redemptionsRefused },
            follow_ups = new
            {
                answered_per_s = Math.Round((_returnsAcked + _redemptionsAccepted + _redemptionsRefused) / Math.Max(0.001, Seconds(_startedAt, _followUpsEndedAt)), 1),
                drained_after_purchases_s = Math.Round(Seconds(_purchasesEndedAt, _followUpsEndedAt), 3),
            },
            engine = new { spawned = options.Spawn, peak_working_set_mib = peakMiB },
            config = new { options.Mode, options.Streams, options.InFlightPerStream, options.Members, options.ZipfSkew, options.RatePerSecond, options.LinesMax, options.ReturnShare, options.RedemptionShare, options.Target },
        };
        string json = JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true });
        Console.WriteLine(json);
        if (options.JsonPath is not null)
        {
            File.WriteAllText(options.JsonPath, json);
        }

        if (options.HtmlPath is not null)
        {
            File.WriteAllText(options.HtmlPath, HtmlReport.Render(json, _timeline, latency));
        }

        return report.verify.ok ? 0 : 1;
    }

    private void Log(string message)
    {
        if (!options.Quiet)
        {
            Console.Error.WriteLine("loadtest: " + message);
        }
    }

    private static LongHistogram NewHistogram() => new(LatencyMicrosMax, LatencySignificantDigits);

    private static string MemberId(int m) => "lm" + m.ToString(CultureInfo.InvariantCulture);
}
