using System.Globalization;

namespace Loyalty.LoadTest;

/// <summary>Command-line options of the load tester.</summary>
internal sealed class LoadOptions
{
    /// <summary>Most line items the load tester puts in one basket.</summary>
    public const int BasketLinesMax = 50;

    /// <summary>Most purchases per message: the engine's limit for IngestBatches.</summary>
    public const int BatchMax = 1_000;

    public string Target { get; set; } = "http://127.0.0.1:5000";

    /// <summary>The engines of --target (a comma-separated list): streams are spread over them.</summary>
    public IReadOnlyList<string> Targets => Target.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    /// <summary>The key given with --key, if any.</summary>
    public string? Key { get; private set; }

    /// <summary>The key that sets up the program against --target: --key, else $LOYALTY_KEY, else ./data/operator.key.</summary>
    public string ResolveKey()
    {
        if (Key is { Length: > 0 } key)
        {
            return key;
        }

        if (Environment.GetEnvironmentVariable("LOYALTY_KEY") is { Length: > 0 } fromEnvironment)
        {
            return fromEnvironment;
        }

        string file = Path.Combine("data", "operator.key");
        return File.Exists(file)
            ? File.ReadAllText(file).Trim()
            : throw new ArgumentException("--target needs an operator or program admin key: --key KEY, LOYALTY_KEY, or ./data/operator.key");
    }

    public string Program { get; private set; } = "load-" + Guid.NewGuid().ToString("N")[..8];

    public int Members { get; private set; } = 10_000;

    /// <summary>
    /// The most events sent. Without <c>--events</c>: in rate mode what the rate needs for the
    /// whole duration (a fixed count would end a fast run early, cutting its measured window
    /// short with its warm-up still in it); in max mode 200,000.
    /// </summary>
    public long Events { get; private set; } = 200_000;

    public double DurationSeconds { get; private set; } = 60;

    public int Streams { get; private set; } = 4;

    public int InFlightPerStream { get; private set; } = 512;

    /// <summary>Purchases per message; above 1 the streams use IngestBatches instead of Ingest.</summary>
    public int Batch { get; private set; } = 1;

    public string Mode { get; private set; } = "max";

    public double RatePerSecond { get; private set; }

    public double ZipfSkew { get; private set; }

    public bool Sequential { get; private set; }

    public string? JsonPath { get; private set; }

    public bool Verify { get; private set; } = true;

    public string? Spawn { get; private set; }

    public string? Postgres { get; private set; } = Environment.GetEnvironmentVariable("LOYALTY_BENCH_POSTGRES");

    public string? HtmlPath { get; private set; }

    public int LinesMax { get; private set; } = 3;

    public int Stores { get; private set; } = 50;

    /// <summary>The program's rules: "plain" (points per dollar and two product rules) or "full" (also pending points, expiry and tiers).</summary>
    public string Rules { get; private set; } = "plain";

    public double ReturnShare { get; private set; }

    public double RedemptionShare { get; private set; }

    public bool Quiet { get; private set; }

    public double WarmupSeconds { get; private set; } = 5;

    public List<string> EngineArgs { get; } = [];

    /// <summary>Environment variables set for the spawned engine only (its GC settings, say), not for this tool.</summary>
    public Dictionary<string, string> EngineEnvironment { get; } = [];

    /// <summary>Event streams (Events.Subscribe) held open during the run, to measure events out.</summary>
    public int Subscribers { get; private set; }

    /// <summary>Whether a webhook subscription delivers every event to a receiver in the load tester.</summary>
    public bool Webhook { get; private set; }

    private static string RulesNamed(string value) =>
        value is "plain" or "full" ? value : throw new ArgumentException("--rules is plain or full");

    public const string Usage = """
        Loyalty load tester: streams purchases to a running engine and verifies the balances.

          --target URL[,URL...] engine addresses (default http://127.0.0.1:5000); streams are
                                spread over them, and a stream that fails moves to the next
                                one and resends every purchase not yet acknowledged (purchases
                                refused with UNAVAILABLE are resent too), so a failover can be
                                measured: the report counts it per second
          --key KEY             an operator key, or the program's admin key, for --target
                                (default: $LOYALTY_KEY, else ./data/operator.key); the run
                                itself uses a POS key it makes with it
          --members N           distinct members, enrolled first (default 10000)
          --events N            stop after N events (default: in rate mode, rate x duration;
                                in max mode 200000)
          --duration S          stop after S seconds (default 60), warm-up included
          --warmup S            seconds of load before measuring starts (default 5; 0 = none)
          --streams N           concurrent ingest streams (default 4)
          --in-flight N         unacknowledged events per stream in max mode (default 512)
          --batch N             purchases per message, 1..1000 (default 1: Ingest, one purchase
                                per message; above 1: IngestBatches); at most --in-flight
          --mode max|rate       closed loop as fast as acks return, or open loop at --rate
          --rate N              events per second in rate mode (all streams together)
          --zipf S              member popularity skew; 0 = uniform (default 0)
          --order random|sequential
                                random members (default), or in turn: stream s takes members
                                s, s + streams, ...; once each stream has sent members/streams
                                events, every member has been reached (for scale runs)
          --program ID          program id (default: a fresh one per run)
          --stores N            stores the purchases come from (default 50)
          --rules plain|full    the program's rules: plain (default) earns spendable points by
                                the dollar with two product rules; full also holds points
                                pending for 14 days, lets each lot expire after 12 months with
                                a warning 30 days before, and ranks members in three tiers, so
                                that purchases also move due times and tier counts
          --lines N             line items per basket, 1..N at random; 0 = totals only (default 3)
          --returns F           share of accepted purchases returned in part, 0..1 (default 0)
          --redemptions F       share of accepted purchases followed by a redemption of a
                                10-point reward by the same member, 0..1 (default 0)
          --subscribers N       event streams (Events.Subscribe) open during the run; the
                                report gives their events per second and the delay from an
                                entry's record time to its arrival (default 0)
          --webhook             a webhook for every event, received by the load tester on a
                                loopback port (the engine needs Webhooks:AllowHttp=true and
                                Webhooks:AllowPrivateTargets=true; a spawned engine gets
                                both); the report gives deliveries per second and their delay
          --spawn KIND          start an engine first: sqlite (a fresh file), postgres (needs
                                --postgres or LOYALTY_BENCH_POSTGRES) or memory (not durable: the ceiling);
                                or grpc-floor: a server that answers every purchase at once, with
                                no grain and no ledger (the floor of gRPC and this tool; nothing
                                to verify; --engine-arg --Floor:Hops=N hands each answer through
                                the thread pool N times first)
          --postgres CONN       Npgsql connection string for --spawn postgres
          --engine-arg ARG      one more argument for the spawned engine (repeatable),
                                e.g. --engine-arg --Orleans:IdleDeactivateAfterSeconds=30
          --engine-env NAME=VALUE  an environment variable for the spawned engine only
                                (repeatable), e.g. --engine-env DOTNET_GCGen0MaxBudget=1000000
          --json PATH           write a machine-readable report
          --html PATH           write a self-contained page with throughput and latency charts
          --no-verify           skip reading back balances
          --quiet               no progress output
        """;

    /// <summary>The --spawn kind that starts the gRPC floor instead of the engine.</summary>
    public const string GrpcFloor = "grpc-floor";

    /// <summary>What --spawn takes, and the refusal naming them.</summary>
    public static readonly string[] SpawnKinds = ["sqlite", "postgres", "memory", GrpcFloor];

    public static readonly string SpawnKindsRefusal = $"--spawn is {string.Join(", ", SpawnKinds[..^1])} or {SpawnKinds[^1]}";

    public static LoadOptions Parse(string[] args)
    {
        var o = new LoadOptions();
        bool eventsGiven = false;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--target": o.Target = Next(); break;
                case "--key": o.Key = Next(); break;
                case "--program": o.Program = Next(); break;
                case "--members": o.Members = Positive(int.Parse(Next(), CultureInfo.InvariantCulture), "--members"); break;
                case "--events": o.Events = Positive(long.Parse(Next(), CultureInfo.InvariantCulture), "--events"); eventsGiven = true; break;
                case "--duration": o.DurationSeconds = Positive(double.Parse(Next(), CultureInfo.InvariantCulture), "--duration"); break;
                case "--streams": o.Streams = Positive(int.Parse(Next(), CultureInfo.InvariantCulture), "--streams"); break;
                case "--in-flight": o.InFlightPerStream = Positive(int.Parse(Next(), CultureInfo.InvariantCulture), "--in-flight"); break;
                case "--batch": o.Batch = int.Parse(Next(), CultureInfo.InvariantCulture) is >= 1 and <= BatchMax and int b ? b : throw new ArgumentException($"--batch must be 1..{BatchMax}"); break;
                case "--mode": o.Mode = Next() is "max" or "rate" ? args[i] : throw new ArgumentException("--mode is max or rate"); break;
                case "--rate": o.RatePerSecond = Positive(double.Parse(Next(), CultureInfo.InvariantCulture), "--rate"); break;
                case "--zipf": o.ZipfSkew = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--order": o.Sequential = Next() is "random" or "sequential" ? args[i] == "sequential" : throw new ArgumentException("--order is random or sequential"); break;
                case "--json": o.JsonPath = Next(); break;
                case "--no-verify": o.Verify = false; break;
                case "--quiet": o.Quiet = true; break;
                case "--warmup": o.WarmupSeconds = double.Parse(Next(), CultureInfo.InvariantCulture) is >= 0 and double w ? w : throw new ArgumentException("--warmup must be 0 or more"); break;
                case "--spawn": o.Spawn = SpawnKinds.Contains(Next()) ? args[i] : throw new ArgumentException(SpawnKindsRefusal); break;
                case "--postgres": o.Postgres = Next(); break;
                case "--engine-arg": o.EngineArgs.Add(Next()); break;
                case "--engine-env":
                    string[] variable = Next().Split('=', 2);
                    o.EngineEnvironment[variable[0]] = variable.Length == 2 && variable[0].Length > 0 ? variable[1] : throw new ArgumentException("--engine-env takes NAME=VALUE");
                    break;
                case "--html": o.HtmlPath = Next(); break;
                case "--lines": o.LinesMax = int.Parse(Next(), CultureInfo.InvariantCulture) is >= 0 and <= BasketLinesMax and int n ? n : throw new ArgumentException($"--lines must be 0..{BasketLinesMax}"); break;
                case "--rules": o.Rules = RulesNamed(Next()); break;
                case "--stores": o.Stores = Positive(int.Parse(Next(), CultureInfo.InvariantCulture), "--stores"); break;
                case "--returns": o.ReturnShare = double.Parse(Next(), CultureInfo.InvariantCulture) is >= 0 and <= 1 and double f ? f : throw new ArgumentException("--returns must be 0..1"); break;
                case "--redemptions": o.RedemptionShare = double.Parse(Next(), CultureInfo.InvariantCulture) is >= 0 and <= 1 and double r ? r : throw new ArgumentException("--redemptions must be 0..1"); break;
                case "--subscribers": o.Subscribers = int.Parse(Next(), CultureInfo.InvariantCulture) is >= 0 and <= 64 and int subscribers ? subscribers : throw new ArgumentException("--subscribers must be 0..64"); break;
                case "--webhook": o.Webhook = true; break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }

        if (o.Spawn is not null && args.Contains("--target"))
        {
            throw new ArgumentException("--spawn starts its own engine; leave out --target");
        }

        if (o.Spawn is null && (o.EngineArgs.Count > 0 || o.EngineEnvironment.Count > 0))
        {
            throw new ArgumentException("--engine-arg and --engine-env are for an engine started with --spawn");
        }

        if (o.Targets.Count == 0 || o.Targets.Any(t => !Uri.TryCreate(t, UriKind.Absolute, out _)))
        {
            throw new ArgumentException("--target takes one or more absolute URLs, separated by commas");
        }

        if (o.Sequential && o.ZipfSkew > 0)
        {
            throw new ArgumentException("--order sequential visits every member in turn; it does not take --zipf");
        }

        if (o.Batch > o.InFlightPerStream)
        {
            throw new ArgumentException("--batch cannot be larger than --in-flight: a batch is sent whole, so its purchases all count as in flight");
        }

        if (o.Spawn == GrpcFloor && (o.ReturnShare > 0 || o.RedemptionShare > 0 || o.Subscribers > 0 || o.Webhook))
        {
            throw new ArgumentException("--spawn grpc-floor answers purchases only: leave out --returns, --redemptions, --subscribers and --webhook");
        }

        if (o.Spawn == GrpcFloor)
        {
            // It keeps no balances to read back.
            o.Verify = false;
        }

        if (o.Webhook && o.Spawn is not null)
        {
            o.EngineArgs.Add("--Webhooks:AllowHttp=true");
            o.EngineArgs.Add("--Webhooks:AllowPrivateTargets=true");
        }

        if (o.Mode == "rate" && o.RatePerSecond <= 0)
        {
            throw new ArgumentException("--mode rate needs --rate");
        }

        if (o.Mode == "rate" && !eventsGiven)
        {
            o.Events = Math.Max(1, (long)Math.Ceiling(o.RatePerSecond * o.DurationSeconds));
        }

        return o;
    }

    private static T Positive<T>(T value, string name) where T : System.Numerics.INumber<T> =>
        value > T.Zero ? value : throw new ArgumentException($"{name} must be positive");
}
