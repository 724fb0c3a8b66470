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

    /// <summary>Most times one stream moves to another target before it gives up.</summary>
    private const int ReconnectsMax = 1_000;

    /// <summary>How long after the run's end a stream keeps resending what was not answered.</summary>
    private static readonly TimeSpan ResendGraceMax = TimeSpan.FromSeconds(60);

    /// <summary>How long a purchase refused with UNAVAILABLE waits before it is sent again.</summary>
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>How long a stream whose connection failed waits before it connects to the next target.</summary>
    private static readonly TimeSpan ReconnectDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>How long the run waits after the last purchase for the event streams and the webhook to catch up.</summary>
    private static readonly TimeSpan EventsDrainMax = TimeSpan.FromSeconds(60);

    private readonly string _runId = Guid.NewGuid().ToString("N")[..6];
    private readonly long[] _expectedPoints = new long[options.Members];
    private readonly ConcurrentDictionary<string, long> _errors = new();
    /// <summary>Failures the run recovered from by resending (streams cut, purchases refused UNAVAILABLE), by kind.</summary>
    private readonly ConcurrentDictionary<string, long> _recovered = new();
    private long _errorEvents;
    private long _reconnects;
    private long _resent;
    private readonly Channel<FollowUp> _followUps = Channel.CreateUnbounded<FollowUp>();
    private readonly List<LongHistogram> _histograms = [];
    private readonly List<LongHistogram> _allHistograms = [];
    private readonly List<LongHistogram> _intervalHistograms = [];
    private readonly List<TimelinePoint> _timeline = [];
    /// <summary>Rate mode: wakes each stream at its purchases' send times (see <see cref="Pacer"/>).</summary>
    private Pacer? _pacer;
    /// <summary>Rate mode: how late the pacer woke a stream for a measured purchase's send time, in microseconds (locked on itself).</summary>
    private readonly LongHistogram _pacingLate = NewHistogram();
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
    /// <summary>This process's own garbage collection when the purchases started, and while they ran.</summary>
    private TesterGc _gcAtStart, _gcDuringPurchases;

    /// <summary>A return of part of an accepted purchase (a SKU, or an amount), or a redemption by its member.</summary>
    private readonly record struct FollowUp(int Member, string Original, string Sku, long AmountMinor, bool Redeem);

    /// <summary>This process's collections so far (each generation's count includes the older ones' collections) and their total pause.</summary>
    private readonly record struct TesterGc(TimeSpan Pause, int Gen0, int Gen1, int Gen2)
    {
        public static TesterGc Now() => new(GC.GetTotalPauseDuration(), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));

        public static TesterGc operator -(TesterGc a, TesterGc b) => new(a.Pause - b.Pause, a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2);
    }

    /// <summary>
    /// One second of the run: when, acks so far, throughput in that second, p99 since the start,
    /// errors so far and in that second (failed streams, refusals), that second's own p99 and
    /// maximum, and the machine's processor counters at that moment (<see cref="Cpu"/>) with that
    /// second's busy and stolen shares.
    /// </summary>
    internal readonly record struct TimelinePoint(double Seconds, long Acked, double PerSecond, double P99Ms, long Errors = 0, double ErrorsPerSecond = 0,
        double IntervalP99Ms = 0, double IntervalMaxMs = 0, MachineCpu? Cpu = null, double? CpuBusyPct = null, double? CpuStealPct = null);

    /// <summary>The machine's processor counters when the run started, when the measured purchases started (the first second past the warm-up) and when the purchases ended.</summary>
    private MachineCpu? _cpuAtStart, _cpuAtMeasure, _cpuAtEnd;

    /// <summary>The tester's and the spawned engine's processor time when the run started, when the measured purchases started (to a second) and when the purchases ended.</summary>
    private ProcessCpu? _processCpuAtStart, _processCpuAtMeasure, _processCpuAtEnd;

    /// <summary>Orders the measure reading against the end's: no measure reading is taken once the purchases have ended.</summary>
    private readonly Lock _processCpuGate = new();
    private bool _processCpuMeasureTaken;

    /// <summary>The engine this run spawned, if any.</summary>
    private EngineProcess? _engine;

    public async Task<int> RunAsync()
    {
        await using EngineProcess? engine = options.Spawn is null ? null : await EngineProcess.StartAsync(options.Spawn, options.Postgres, options.EngineArgs, options.EngineEnvironment);
        if (engine is not null)
        {
            options.Target = engine.Target;
            Log($"started an engine on {options.Spawn} at {engine.Target}");
        }

        GrpcChannel[] channels = [.. options.Targets.Select(t => GrpcChannel.ForAddress(t, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
        }))];
        try
        {
            return await RunOnAsync(channels, engine);
        }
        finally
        {
            foreach (GrpcChannel channel in channels)
            {
                channel.Dispose();
            }
        }
    }

    private async Task<int> RunOnAsync(GrpcChannel[] channels, EngineProcess? engine)
    {
        // The program is set up with the operator's (or the program admin's) key; the load runs
        // with a POS key made for the run, as a till would.
        string adminKey = engine?.OperatorKey ?? options.ResolveKey();
        string posKey = await SetUpAsync(channels[0], adminKey);
        CallInvoker[] tills = [.. channels.Select(c => c.WithKey(posKey))];
        await using EventWatch? watch = options.Subscribers > 0 || options.Webhook ? new EventWatch(options) : null;
        if (watch is not null)
        {
            await watch.StartAsync(channels[0].WithKey(adminKey));
            Log($"events out: {options.Subscribers} event stream(s){(options.Webhook ? " and a webhook" : "")}");
        }

        Log($"{options.Streams} streams over {tills.Length} target(s), mode {options.Mode}, up to {options.Events} events or {options.DurationSeconds}s");

        _engine = engine;
        await using EngineGcWatch? engineGc = engine is null ? null : EngineGcWatch.TryStart(engine.ProcessId);
        var clock = Stopwatch.StartNew();
        _gcAtStart = TesterGc.Now();
        _cpuAtStart = MachineCpu.Read();
        _processCpuAtStart = ProcessCpu.Read(0, engine);
        (DateTime utc, long ticks) anchor = (DateTime.UtcNow, Stopwatch.GetTimestamp());
        _startedAt = Stopwatch.GetTimestamp();
        _measureFrom = _startedAt + (long)(options.WarmupSeconds * Stopwatch.Frequency);
        watch?.MeasureFrom(_measureFrom);
        Task run = RunLoadAsync(tills, clock);
        await ShowProgressAsync(run, clock);
        await run;
        watch?.MeasureTo(_purchasesEndedAt);
        double drained = watch is null ? 0 : await watch.DrainAsync(_acked, EventsDrainMax);
        // Purchase throughput covers the purchases only: returns and redemptions still being
        // answered after the last purchase are reported on their own.
        double seconds = Math.Max(0.001, Seconds(Math.Min(_measureFrom, _purchasesEndedAt), _purchasesEndedAt));
        LongHistogram measured = Merged(_histograms);
        long measuredFrom = Math.Min(_measureFrom, _purchasesEndedAt);
        if (measured.TotalCount == 0)
        {
            measuredFrom = _startedAt;
            // The run ended inside the warm-up: report the whole run rather than nothing.
            Log("the run ended before the warm-up did; the figures cover the whole run");
            (measured, seconds, _ackedMeasured, _warmupUsed) = (Merged(_allHistograms), Math.Max(0.001, Seconds(_startedAt, _purchasesEndedAt)), _acked, 0);
        }

        DateTime Utc(long timestamp) => anchor.utc + TimeSpan.FromSeconds(Seconds(anchor.ticks, timestamp));
        EngineGc? gc = engineGc is null ? null
            : await engineGc.SummariseAsync(Utc(measuredFrom), Utc(_purchasesEndedAt), _ackedMeasured, Utc(_startedAt));
        if (gc is not null)
        {
            Log($"engine GC over the measured purchases: {gc.AllocatedBytes / Math.Max(1, gc.Purchases)} bytes allocated per purchase, {gc.Pauses.Count} pauses, longest {(gc.Pauses.Count == 0 ? 0 : gc.Pauses.Max(p => p.Ms)):F1} ms");
        }

        (bool ok, long mismatched, long checkedMembers) = options.Verify ? await VerifyAsync(tills) : (true, 0, 0);
        return Report(measured, seconds, ok, mismatched, checkedMembers, engine, watch?.Report(seconds, drained), gc);
    }

    private async Task RunLoadAsync(CallInvoker[] tills, Stopwatch clock)
    {
        V1.Purchases.PurchasesClient[] targets = [.. tills.Select(t => new V1.Purchases.PurchasesClient(t))];
        long eventsPerStream = Math.Max(1, options.Events / options.Streams);
        Task[] followUps = [.. Enumerable.Range(0, FollowUpWorkers).Select(w => Task.Run(() =>
            FollowUpWorkerAsync(targets[w % targets.Length], new V1.Redemptions.RedemptionsClient(tills[w % tills.Length]))))];
        using Pacer? pacer = _pacer = options.Mode == "rate" ? new Pacer() : null;
        Task[] streams = [.. Enumerable.Range(0, options.Streams).Select(s => Task.Run(() => RunStreamAsync(targets, s, eventsPerStream, clock)))];
        await Task.WhenAll(streams);
        _purchasesEndedAt = Stopwatch.GetTimestamp();
        if (clock.Elapsed.TotalSeconds < options.DurationSeconds - 1)
        {
            Log($"the run stopped after {options.Events} events at {clock.Elapsed.TotalSeconds:F1}s, before --duration {options.DurationSeconds:0.#}s: its measured window is shorter (--events sets the count)");
        }

        _gcDuringPurchases = TesterGc.Now() - _gcAtStart;
        _cpuAtEnd = MachineCpu.Read();
        lock (_processCpuGate)
        {
            _processCpuAtEnd = ProcessCpu.Read(Interlocked.Read(ref _acked), _engine);
        }
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
        await programs.PutProgramAsync(PosMix.Program(options.Program, options.Rules));
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

    /// <summary>
    /// One stream's purchases, on its target first (stream s on target s mod targets). When the
    /// stream fails it moves to the next target and resends every purchase not yet answered;
    /// purchases refused with UNAVAILABLE are sent again after <see cref="RetryDelay"/>. A purchase
    /// holds its in-flight slot until it is answered for good, so resends never exceed the window.
    /// </summary>
    private async Task RunStreamAsync(V1.Purchases.PurchasesClient[] targets, int stream, long count, Stopwatch clock)
    {
        var state = new StreamState(stream, count, options.InFlightPerStream);
        lock (_histograms)
        {
            _histograms.Add(state.Histogram);
            _allHistograms.Add(state.All);
            _intervalHistograms.Add(state.Interval);
        }

        MemberPicker picker = options.Sequential
            ? MemberPicker.InTurn(options.Members, first: stream, step: options.Streams)
            : new MemberPicker(options.Members, options.ZipfSkew, seed: stream + 1);
        var mix = new PosMix(options.LinesMax, options.Stores, seed: stream + 1);
        long streamStart = Stopwatch.GetTimestamp();
        for (int attempt = 0, target = stream % targets.Length; ; attempt++, target = (target + 1) % targets.Length)
        {
            bool failed = await StreamOnceAsync(targets[target], state, picker, mix, streamStart, clock);
            bool sendingOver = state.Next >= count || clock.Elapsed.TotalSeconds >= options.DurationSeconds;
            if (sendingOver && state.Unanswered.IsEmpty)
            {
                return;
            }

            if (attempt >= ReconnectsMax || clock.Elapsed.TotalSeconds >= options.DurationSeconds + ResendGraceMax.TotalSeconds)
            {
                _errors.AddOrUpdate("unanswered", state.Unanswered.Count, (_, n) => n + state.Unanswered.Count);
                return;
            }

            if (failed)
            {
                Interlocked.Increment(ref _reconnects);
                await Task.Delay(ReconnectDelay);
            }
        }
    }

    /// <summary>One connection of a stream: resends what is unanswered, sends new purchases, waits for the answers; true when the stream failed.</summary>
    private async Task<bool> StreamOnceAsync(V1.Purchases.PurchasesClient client, StreamState state, MemberPicker picker, PosMix mix, long streamStart, Stopwatch clock)
    {
        using var sink = new PurchaseSink(client, options.Batch);
        // Cancelled when the ack stream fails, so that the send loop stops waiting for slots that will never come back.
        using var readerFailed = new CancellationTokenSource();
        Task reader = Task.Run(async () =>
        {
            try
            {
                await sink.ReadAcksAsync(ack => Acked(ack, state));
            }
            catch (Exception e) when (e is RpcException or IOException or InvalidOperationException)
            {
                Recovered("stream:" + (e is RpcException r ? r.StatusCode.ToString() : e.GetType().Name));
                await readerFailed.CancelAsync();
            }
        });
        try
        {
            foreach (long k in state.Unanswered.Keys.Order())
            {
                await ResendAsync(sink, state, k);
            }

            await SendNewAsync(sink, state, picker, mix, streamStart, clock, readerFailed.Token);
            // Wait for the answers still due, resending what is refused UNAVAILABLE meanwhile.
            long graceEnds = Stopwatch.GetTimestamp() + (long)(ResendGraceMax.TotalSeconds * Stopwatch.Frequency);
            while (!state.Unanswered.IsEmpty && !readerFailed.IsCancellationRequested && Stopwatch.GetTimestamp() < graceEnds)
            {
                await ResendDueAsync(sink, state);
                await sink.FlushAsync();
                await Task.Delay(10);
            }

            if (!readerFailed.IsCancellationRequested)
            {
                await sink.CompleteAsync();
            }
        }
        catch (Exception e) when (e is RpcException or IOException or InvalidOperationException or OperationCanceledException)
        {
            // The stream broke under a write; the reader says how, and the caller moves on.
            await readerFailed.CancelAsync();
        }

        await reader;
        return readerFailed.IsCancellationRequested;
    }

    /// <summary>New purchases, paced in rate mode, while the run lasts and the stream holds.</summary>
    private async Task SendNewAsync(PurchaseSink sink, StreamState state, MemberPicker picker, PosMix mix, long streamStart, Stopwatch clock, CancellationToken readerFailed)
    {
        double perStreamRate = options.RatePerSecond / options.Streams;
        while (state.Next < state.Count && clock.Elapsed.TotalSeconds < options.DurationSeconds && !readerFailed.IsCancellationRequested)
        {
            await ResendDueAsync(sink, state);

            // A purchase refused UNAVAILABLE keeps its slot until it is answered, so while every
            // slot waits for a resend (a node down for longer than the slots last), the resends
            // must still go out: wait for a slot in short steps and send what is due in between.
            bool slot;
            while (!(slot = await state.Slots.WaitAsync(RetryDelay, readerFailed)) && clock.Elapsed.TotalSeconds < options.DurationSeconds)
            {
                await ResendDueAsync(sink, state);
                await sink.FlushAsync();
            }

            if (!slot)
            {
                break;
            }

            long k = state.Next;
            long now = Stopwatch.GetTimestamp();
            if (options.Mode == "rate")
            {
                // Open loop: latency counts from the intended send time (no coordinated omission).
                long intended = streamStart + (long)(k / perStreamRate * Stopwatch.Frequency);
                if (intended > now)
                {
                    await _pacer!.WaitUntilAsync(intended, readerFailed);
                    RecordPacing(intended);
                }

                now = intended;
            }

            PosMix.Basket basket = mix.Next(picker.Next());
            state.Baskets[k] = basket;
            state.StartedAt[k] = now;
            V1.Purchase purchase = Purchase(state.Stream, k, basket);
            // Unanswered from before it is written: a write cut half-way is resent on the next connection.
            state.Unanswered[k] = purchase;
            state.Next = k + 1;
            Interlocked.Increment(ref _sent);
            await sink.SendAsync(purchase);
        }
    }

    /// <summary>How late the send of a measured purchase woke, against its intended time: the load tester's own error, inside the latency it reports.</summary>
    private void RecordPacing(long intended)
    {
        if (intended >= _measureFrom)
        {
            long micros = Math.Max(0, (Stopwatch.GetTimestamp() - intended) * 1_000_000 / Stopwatch.Frequency);
            lock (_pacingLate)
            {
                _pacingLate.RecordValue(micros);
            }
        }
    }

    /// <summary>Sends again the purchases refused UNAVAILABLE whose wait is over.</summary>
    private async Task ResendDueAsync(PurchaseSink sink, StreamState state)
    {
        long now = Stopwatch.GetTimestamp();
        while (state.Retries.TryPeek(out (long K, long Due) retry) && retry.Due <= now && state.Retries.TryDequeue(out retry))
        {
            await ResendAsync(sink, state, retry.K);
        }
    }

    private async Task ResendAsync(PurchaseSink sink, StreamState state, long k)
    {
        if (state.Unanswered.TryGetValue(k, out V1.Purchase? purchase))
        {
            state.Resent[k] = 0;
            Interlocked.Increment(ref _resent);
            await sink.SendAsync(purchase);
        }
    }

    /// <summary>
    /// An answer: a refusal with UNAVAILABLE is sent again later; the first final answer of a
    /// purchase is measured and counted (a resend's DUPLICATE of a purchase already answered is not).
    /// </summary>
    private void Acked(V1.PurchaseAck ack, StreamState state)
    {
        long k = long.Parse(ack.TransactionId.AsSpan(ack.TransactionId.LastIndexOf('-') + 1), CultureInfo.InvariantCulture);
        if (ack.Status == V1.AckStatus.Rejected && ack.ErrorCode == "UNAVAILABLE")
        {
            Recovered("purchase:UNAVAILABLE");
            state.Retries.Enqueue((k, Stopwatch.GetTimestamp() + (long)(RetryDelay.TotalSeconds * Stopwatch.Frequency)));
            return;
        }

        if (!state.Unanswered.TryRemove(k, out _))
        {
            return;
        }

        // Events sent during the warm-up count for verification, not for the figures; a resent
        // purchase's latency counts from its first send, so a failover shows in the tail.
        long micros = Math.Max(0, (Stopwatch.GetTimestamp() - state.StartedAt[k]) * 1_000_000 / Stopwatch.Frequency);
        lock (state.All)
        {
            state.All.RecordValue(micros);
            state.Interval.RecordValue(micros);
            if (state.StartedAt[k] >= _measureFrom)
            {
                state.Histogram.RecordValue(micros);
                Interlocked.Increment(ref _ackedMeasured);
            }
        }

        // A basket is needed only until its first final answer (this one). Letting it go then keeps
        // the tester's heap from growing with the run: kept, every basket of a run stayed alive
        // to its end, and the tester's own collections, which count in the latency it reports,
        // had all of them to look through.
        PosMix.Basket basket = state.Baskets[k] ?? throw new InvalidOperationException($"Purchase {k} was answered twice.");
        state.Baskets[k] = null;
        OnAck(ack, basket, state.ReturnDice, state.Resent.ContainsKey(k));
        state.Slots.Release();
    }

    private void Recovered(string kind)
    {
        _recovered.AddOrUpdate(kind, 1, (_, n) => n + 1);
        Interlocked.Increment(ref _errorEvents);
    }

    /// <summary>What one stream keeps across its connections.</summary>
    private sealed class StreamState(int stream, long count, int inFlight)
    {
        public int Stream { get; } = stream;

        public long Count { get; } = count;

        /// <summary>The next purchase's number; written by the stream's send loop only.</summary>
        public long Next { get; set; }

        public long[] StartedAt { get; } = new long[count];

        public PosMix.Basket?[] Baskets { get; } = new PosMix.Basket?[count];

        /// <summary>Purchases sent and not yet answered for good, by number (each holds a slot).</summary>
        public ConcurrentDictionary<long, V1.Purchase> Unanswered { get; } = new();

        /// <summary>Purchases sent more than once (their DUPLICATE answers are expected).</summary>
        public ConcurrentDictionary<long, byte> Resent { get; } = new();

        /// <summary>Purchases refused UNAVAILABLE, with the time they may be sent again.</summary>
        public ConcurrentQueue<(long K, long Due)> Retries { get; } = new();

        public SemaphoreSlim Slots { get; } = new(inFlight);

        public Random ReturnDice { get; } = new(stream + 1_000);

        public LongHistogram Histogram { get; } = NewHistogram();

        public LongHistogram All { get; } = NewHistogram();

        /// <summary>Answers since the timeline's last point (reset by each point, under <see cref="All"/>'s lock).</summary>
        public LongHistogram Interval { get; } = NewHistogram();
    }

    private void OnAck(V1.PurchaseAck ack, PosMix.Basket basket, Random returnDice, bool resent)
    {
        Interlocked.Increment(ref _acked);
        // A purchase resent after a failure may have been recorded the first time: DUPLICATE with its points is its answer.
        bool answered = ack.Status == V1.AckStatus.Accepted || (ack.Status == V1.AckStatus.Duplicate && resent);
        if (!answered)
        {
            _errors.AddOrUpdate(ack.Status == V1.AckStatus.Duplicate ? "DUPLICATE" : ack.ErrorCode, 1, (_, n) => n + 1);
            Interlocked.Increment(ref _errorEvents);
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
            Interlocked.Increment(ref _errorEvents);
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
            Interlocked.Increment(ref _errorEvents);
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
        long errors = Interlocked.Read(ref _errorEvents);
        double elapsed = Math.Max(0.001, seconds - previous.Seconds);
        LongHistogram interval = Merged(_intervalHistograms, reset: true);
        (double intervalP99, double intervalMax) = interval.TotalCount == 0 ? (0, 0) : (interval.GetValueAtPercentile(99) / 1000.0, interval.GetMaxValue() / 1000.0);
        MachineCpu? cpu = MachineCpu.Read();
        (double BusyPct, double StealPct)? share = cpu is { } now && (_timeline.Count > 0 ? previous.Cpu : _cpuAtStart) is { } before ? now.Since(before) : null;
        var point = new TimelinePoint(seconds, acked, (acked - previous.Acked) / elapsed, p99, errors, (errors - previous.Errors) / elapsed, intervalP99, intervalMax,
            cpu, share?.BusyPct, share?.StealPct);
        if (_cpuAtMeasure is null && Stopwatch.GetTimestamp() >= _measureFrom)
        {
            // The counters are read once a second, so the measured window's start is known to a second.
            _cpuAtMeasure = _timeline.Count > 0 ? previous.Cpu : _cpuAtStart;
        }

        if (!_processCpuMeasureTaken && Stopwatch.GetTimestamp() >= _measureFrom)
        {
            // Read now, not a second ago; never after the end's reading (the report then uses the start's).
            lock (_processCpuGate)
            {
                _processCpuMeasureTaken = true;
                _processCpuAtMeasure = _processCpuAtEnd is null ? ProcessCpu.Read(Interlocked.Read(ref _acked), _engine) : null;
            }
        }

        _timeline.Add(point);
        return point;
    }

    private LongHistogram Merged(List<LongHistogram> histograms, bool reset = false)
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
                    if (reset)
                    {
                        histograms[i].Reset();
                    }
                }
            }
        }

        return merged;
    }

    private async Task<(bool Ok, long Mismatched, long Checked)> VerifyAsync(CallInvoker[] tills)
    {
        V1.Members.MembersClient[] clients = [.. tills.Select(t => new V1.Members.MembersClient(t))];
        long mismatched = 0;
        var clock = Stopwatch.StartNew();
        await Parallel.ForAsync(0, options.Members, new ParallelOptions { MaxDegreeOfParallelism = SetupConcurrency }, async (m, ct) =>
        {
            V1.Member member = await ReadMemberAsync(clients, m, ct);
            if (member.Balance + member.PendingPoints != Interlocked.Read(ref _expectedPoints[m]))
            {
                Interlocked.Increment(ref mismatched);
            }
        });
        Log($"verified {options.Members} members in {clock.Elapsed.TotalSeconds:F1}s ({options.Members / Math.Max(0.001, clock.Elapsed.TotalSeconds):F0} members/s, {SetupConcurrency} reads at a time)");
        return (mismatched == 0, mismatched, options.Members);
    }

    /// <summary>A member, read through the targets in turn: one that is gone (a failover run) answers UNAVAILABLE, another answers.</summary>
    private async Task<V1.Member> ReadMemberAsync(V1.Members.MembersClient[] clients, int m, CancellationToken cancel)
    {
        for (int attempt = 0; ; attempt++)
        {
            V1.Members.MembersClient client = clients[(m + attempt) % clients.Length];
            try
            {
                return await Quota.RetryAsync(() => client.GetMemberAsync(new V1.GetMemberRequest { ProgramId = options.Program, MemberId = MemberId(m) }, cancellationToken: cancel).ResponseAsync, cancel, retryUnavailable: false);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && attempt < ReconnectsMax)
            {
                await Task.Delay(ReconnectDelay, cancel);
            }
        }
    }

    private int Report(LongHistogram latency, double seconds, bool ok, long mismatched, long checkedMembers, EngineProcess? engine, object? eventsOut, EngineGc? engineGc)
    {
        double Ms(double percentile) => latency.TotalCount == 0 ? 0 : latency.GetValueAtPercentile(percentile) / 1000.0;
        var report = new
        {
            events_sent = _sent,
            events_acked = _acked,
            errors = _errors.ToDictionary(e => e.Key, e => e.Value),
            // Failures the run recovered from by resending: cut streams and purchases refused UNAVAILABLE.
            recovered = new { reconnects = _reconnects, resent = _resent, by_kind = _recovered.ToDictionary(e => e.Key, e => e.Value) },
            duration_s = Math.Round(seconds, 3),
            warmup_s = _warmupUsed,
            throughput_per_s = Math.Round(_ackedMeasured / seconds, 1),
            latency_ms = new { p50 = Ms(50), p90 = Ms(90), p99 = Ms(99), p999 = Ms(99.9), max = latency.TotalCount == 0 ? 0 : latency.GetMaxValue() / 1000.0 },
            // Rate mode: how late the tester itself woke for measured purchases' send times (already inside latency_ms).
            pacing_late_ms = PacingReport(),
            verify = new { ok = ok && _errors.IsEmpty && _acked == _sent, members_checked = checkedMembers, members_mismatched = mismatched },
            returns = new { sent = _returnsSent, acked = _returnsAcked },
            redemptions = new { sent = _redemptionsSent, accepted = _redemptionsAccepted, refused_for_points = _redemptionsRefused },
            follow_ups = new
            {
                answered_per_s = Math.Round((_returnsAcked + _redemptionsAccepted + _redemptionsRefused) / Math.Max(0.001, Seconds(_startedAt, _followUpsEndedAt)), 1),
                drained_after_purchases_s = Math.Round(Seconds(_purchasesEndedAt, _followUpsEndedAt), 3),
            },
            engine = new { spawned = options.Spawn, peak_working_set_mib = engine?.PeakWorkingSetMiB, log = engine?.LogPath },
            // The load tester's own collections while the purchases ran: a pause here delays the
            // reading of answers, so it is inside the latency measured, not the engine's doing.
            tester_gc = new
            {
                pause_ms = Math.Round(_gcDuringPurchases.Pause.TotalMilliseconds, 1),
                gen0 = _gcDuringPurchases.Gen0, gen1 = _gcDuringPurchases.Gen1, gen2 = _gcDuringPurchases.Gen2,
            },
            // The spawned engine's collections while the purchases were measured (see EngineGcWatch).
            engine_gc = engineGc?.ToReport(),
            events_out = eventsOut,
            // The whole machine's processor time while the measured purchases ran (Linux only, else null):
            // time stolen by the host of a virtual machine stalls engine and tester alike.
            machine_cpu = MachineCpuReport(),
            // The tester's and the spawned engine's own processor time over the measured purchases.
            process_cpu = ProcessCpuReport(),
            timeline = _timeline.Select(p => new
            {
                s = Math.Round(p.Seconds, 1), acked_per_s = Math.Round(p.PerSecond), p99_ms = Math.Round(p.P99Ms, 1), second_p99_ms = Math.Round(p.IntervalP99Ms, 1),
                second_max_ms = Math.Round(p.IntervalMaxMs, 1), errors_per_s = Math.Round(p.ErrorsPerSecond),
                cpu_busy_pct = Round(p.CpuBusyPct), cpu_steal_pct = Round(p.CpuStealPct),
            }),
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

    private object? PacingReport()
    {
        lock (_pacingLate)
        {
            double Ms(double percentile) => _pacingLate.GetValueAtPercentile(percentile) / 1000.0;
            return _pacingLate.TotalCount == 0 ? null
                : new { waits = _pacingLate.TotalCount, p50 = Ms(50), p99 = Ms(99), p999 = Ms(99.9), max = _pacingLate.GetMaxValue() / 1000.0 };
        }
    }

    /// <summary>
    /// Cores kept busy and microseconds per purchase, of the tester and of the engine it spawned,
    /// from the first second past the warm-up to the last purchase (see <see cref="ProcessCpu.WindowStart"/>).
    /// </summary>
    private object? ProcessCpuReport()
    {
        ProcessCpu? to, measured, started;
        lock (_processCpuGate)
        {
            (to, measured, started) = (_processCpuAtEnd, _processCpuAtMeasure, _processCpuAtStart);
        }

        if (to is not { } end)
        {
            return null;
        }

        if (ProcessCpu.WindowStart(started, measured, end, warmedUp: options.WarmupSeconds > 0) is not { } from || end.Since(from) is not { } share)
        {
            return null;
        }

        return new
        {
            tester_cores = Math.Round(share.TesterCores, 2),
            tester_us_per_purchase = Round(share.TesterUsPerPurchase),
            engine_cores = share.EngineCores is { } cores ? Math.Round(cores, 2) : (double?)null,
            engine_us_per_purchase = Round(share.EngineUsPerPurchase),
        };
    }

    /// <summary>Busy and stolen shares over the measured purchases, and the seconds of that window with the most theft.</summary>
    private object? MachineCpuReport()
    {
        if ((_cpuAtMeasure ?? _cpuAtStart) is not { } from || _cpuAtEnd is not { } to || to.Since(from) is not { } share)
        {
            return null;
        }

        double warmup = Math.Min(_warmupUsed, Seconds(_startedAt, _purchasesEndedAt));
        double[] stolen = [.. _timeline.Where(p => p.Seconds > warmup && p.CpuStealPct is not null).Select(p => p.CpuStealPct!.Value)];
        return new
        {
            cores = Environment.ProcessorCount,
            busy_pct = Round(share.BusyPct),
            steal_pct = Round(share.StealPct),
            steal_pct_max_second = stolen.Length == 0 ? 0 : Round(stolen.Max()),
            seconds_over_5pct_steal = stolen.Count(s => s > StolenSecondPct),
        };
    }

    /// <summary>A second with more of the machine's time stolen than this (percent) is counted in the report.</summary>
    private const double StolenSecondPct = 5;

    private static double? Round(double? value) => value is { } v ? Math.Round(v, 1) : null;

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
