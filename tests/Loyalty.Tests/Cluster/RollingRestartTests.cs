using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Cluster;

/// <summary>
/// A rolling restart under load: three engines on one PostgreSQL, a till streaming purchases to
/// them in turn, and every node stopped with SIGTERM and started again, one after another. The
/// till, like a real one, reconnects to another node when its stream ends and resends what was not
/// acknowledged. Nothing is lost or doubled, and the only refusals are UNAVAILABLE.
/// </summary>
public sealed class RollingRestartTests(ITestOutputHelper output)
{
    private const string Program = "rolling";
    private const int MembersCount = 60;

    /// <summary>The most purchases one till makes (it stops earlier when told).</summary>
    private const int PurchasesPerTillMax = 20_000;

    /// <summary>How long a node may take to drain and stop after SIGTERM.</summary>
    private static readonly TimeSpan StopMax = TimeSpan.FromSeconds(60);

    /// <summary>How long the whole run may take before the till gives up.</summary>
    private static readonly TimeSpan RunMax = TimeSpan.FromMinutes(4);

    [Fact]
    public async Task RollingRestartUnderLoad_LosesAndDoublesNothing_AndRefusesOnlyWithUnavailable()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "rolling");
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 3);
        await ClusterLedger.EnrolAcrossAsync(cluster.Nodes, Program, MembersCount);

        // Three tills, each starting on another node, so that every restart cuts a stream; they send until told to stop.
        Till[] tills = [.. Enumerable.Range(0, 3).Select(t => new Till(cluster, t))];
        Task tillRun = Task.WhenAll(tills.Select(t => t.RunAsync(RunMax)));
        int AckedCount() => tills.Sum(t => t.AckedCount);

        var stops = new List<(int ExitCode, TimeSpan Took)>();
        for (int node = 0; node < 3; node++)
        {
            // Each restart happens while purchases flow.
            int before = AckedCount();
            await Until(() => AckedCount() >= before + 300 || tillRun.IsCompleted, TimeSpan.FromSeconds(60));
            stops.Add(await cluster.RestartAsync(node, StopMax));
        }

        int last = AckedCount();
        await Until(() => AckedCount() >= last + 300 || tillRun.IsCompleted, TimeSpan.FromSeconds(60));
        foreach (Till till in tills)
        {
            till.Stop();
        }

        await tillRun;
        int sent = tills.Sum(t => t.Created);
        List<StatusCode> streamEnds = [.. tills.SelectMany(t => t.StreamEnds)];
        List<string> refusals = [.. tills.SelectMany(t => t.Refusals)];
        Dictionary<string, long> acked = tills.SelectMany(t => t.Acked).ToDictionary();
        output.WriteLine($"{sent} purchases; stops after SIGTERM: {string.Join(", ", stops.Select(s => $"{s.Took.TotalSeconds:F1} s (exit {s.ExitCode})"))}; " +
            $"streams ended: {streamEnds.Count} ({string.Join(", ", streamEnds.Distinct())}); purchases refused: {refusals.Count} " +
            $"({string.Join(", ", refusals.Distinct())}); resends: {tills.Sum(t => t.Resent)}");

        Assert.All(stops, s => Assert.Equal(0, s.ExitCode));
        Assert.True(streamEnds.Count >= 3, $"only {streamEnds.Count} streams were cut by the restarts");
        Assert.All(streamEnds, code => Assert.Equal(StatusCode.Unavailable, code));
        Assert.All(refusals, refusal => Assert.StartsWith("UNAVAILABLE:", refusal, StringComparison.Ordinal));
        Assert.Equal(sent, acked.Count);
        await ClusterLedger.AssertEachPurchaseOnceAsync(storage, Program, acked, MembersCount, cluster.Nodes[0]);
    }

    private static async Task Until(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition() && clock.Elapsed < timeout)
        {
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// A till with one stream at a time, to the nodes in turn, sending purchases at a steady pace until
    /// told to stop. When its stream ends it opens one to the next node and first resends every
    /// purchase sent and not yet acknowledged (refused ones too).
    /// </summary>
    private sealed class Till(ClusterNodes cluster, int index)
    {
        private readonly ConcurrentDictionary<string, V1.Purchase> _unanswered = new();
        private volatile bool _stopping;

        public ConcurrentDictionary<string, long> Acked { get; } = new();

        public int AckedCount => Acked.Count;

        /// <summary>Purchases made so far (each with its own transaction id).</summary>
        public int Created { get; private set; }

        /// <summary>The status each stream ended with, other than a clean end.</summary>
        public ConcurrentQueue<StatusCode> StreamEnds { get; } = new();

        /// <summary>The code and message of each purchase answered REJECTED.</summary>
        public ConcurrentQueue<string> Refusals { get; } = new();

        public int Resent { get; private set; }

        /// <summary>No new purchases from now on; the till ends once every purchase made is acknowledged.</summary>
        public void Stop() => _stopping = true;

        public async Task RunAsync(TimeSpan runMax)
        {
            var clock = Stopwatch.StartNew();
            for (int turn = 0; !_stopping || !_unanswered.IsEmpty; turn++)
            {
                Assert.True(clock.Elapsed < runMax, $"after {runMax} {_unanswered.Count} purchases of till {index} were still unacknowledged");
                await StreamOnceAsync(cluster.Nodes[(index + turn) % 3]);
            }
        }

        private async Task StreamOnceAsync(HostProcess node)
        {
            using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = node.Purchases.Ingest(deadline: DateTime.UtcNow.AddMinutes(3));
            Task reader = ReadAsync(stream);
            try
            {
                foreach (V1.Purchase again in _unanswered.Values.ToList())
                {
                    Resent++;
                    await stream.RequestStream.WriteAsync(again);
                }

                while (!_stopping && Created < PurchasesPerTillMax && !reader.IsCompleted)
                {
                    int n = Created++;
                    V1.Purchase purchase = Wire.Purchase(Program, $"m{(n * 3 + index) % MembersCount}", $"r{index}-{n}", 1_00 + n % 500);
                    // Counted as sent before it is written: a write cut half-way is resent too.
                    _unanswered[purchase.TransactionId] = purchase;
                    await stream.RequestStream.WriteAsync(purchase);
                    if (n % 2 == 0)
                    {
                        await Task.Delay(10);
                    }
                }

                await stream.RequestStream.CompleteAsync();
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException or IOException)
            {
                // The stream has ended (a write to a closed stream, or the connection closed under it); its reader says how.
            }

            await reader;
        }

        private async Task ReadAsync(AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream)
        {
            try
            {
                while (await stream.ResponseStream.MoveNext(CancellationToken.None))
                {
                    V1.PurchaseAck ack = stream.ResponseStream.Current;
                    if (ack.Status is V1.AckStatus.Accepted or V1.AckStatus.Duplicate)
                    {
                        Acked[ack.TransactionId] = ack.PointsEarned;
                        _unanswered.TryRemove(ack.TransactionId, out _);
                    }
                    else
                    {
                        Refusals.Enqueue($"{ack.ErrorCode}: {ack.ErrorMessage}");
                    }
                }
            }
            catch (RpcException e)
            {
                StreamEnds.Enqueue(e.StatusCode);
            }
        }
    }
}
