using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Hostile;

/// <summary>
/// Random and mutated frames to every method and both streams of a real engine process, seeded
/// and bounded. Every answer must be a clear status (never UNKNOWN, INTERNAL or "retry"), a
/// refused call must write nothing, the engine must keep answering, and its log must stay small.
/// The same fuzzer runs longer for benchmarks with LOYALTY_FUZZ_FRAMES (e.g. 1000000).
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    private const string Program = "fuzz";
    private const int MembersCount = 20;

    /// <summary>Frames per run in the suite.</summary>
    private const int FramesDefault = 10_000;

    /// <summary>Log characters the engine may write per 10,000 bad frames (client faults log a few lines a second).</summary>
    private const long LogCharsPer10kMax = 64 * 1024;

    private static readonly HashSet<StatusCode> Clear =
    [
        StatusCode.OK, StatusCode.InvalidArgument, StatusCode.NotFound, StatusCode.AlreadyExists, StatusCode.FailedPrecondition,
        StatusCode.PermissionDenied, StatusCode.Unauthenticated, StatusCode.ResourceExhausted,
    ];

    private static readonly string[] Writes =
    [
        "PutProgram", "Enroll", "SetMemberFlags", "AdjustPoints", "SetReferrer", "SetProfile", "EraseMember", "MergeMembers",
        "Redeem", "Reserve", "CommitReservation", "CancelReservation", "Accrue", "Return", "CreateKey", "RevokeKey",
    ];

    [Theory]
    [InlineData(Backend.Sqlite, 1)]
    [InlineData(Backend.Postgres, 2)]
    public async Task Fuzz_RandomAndMutatedFrames_GetClearStatuses_WriteNothingWhenRefused_AndLeaveALittleLog(Backend backend, int seed)
    {
        int frames = int.TryParse(Environment.GetEnvironmentVariable("LOYALTY_FUZZ_FRAMES"), out int n) && n > 0 ? n : FramesDefault;
        int port = Ports.Free();
        StorageOptions storage = TestDatabases.Create(backend, "fuzz");
        // The engine's own log settings (Information), not the tests' quieter ones: the log size is the point.
        await using HostProcess engine = await HostProcess.StartAsync([.. EngineArgs.For(storage, port), "--Logging:LogLevel:Default=Information"], port);
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        for (int m = 0; m < MembersCount; m++)
        {
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = $"m{m}" });
        }

        Dictionary<string, long> before = await LastSequencesAsync(storage);
        long logBefore = engine.OutputChars;
        var fuzzer = new Fuzzer(seed);
        var statuses = new Dictionary<StatusCode, int>();
        var touched = new HashSet<string>(StringComparer.Ordinal);
        using HttpClient http = GrpcFrames.Client();
        string address = $"http://127.0.0.1:{port}";
        var clock = System.Diagnostics.Stopwatch.StartNew();

        for (int i = 0; i < frames; i++)
        {
            (MethodDescriptor method, byte[] body, IMessage[] parsed) = fuzzer.Next();
            string? key = fuzzer.Key();
            // The event stream never ends by itself: the fuzzer gives it a deadline, which is then a clear answer too.
            bool endless = method.IsServerStreaming && !method.IsClientStreaming;
            (StatusCode code, string message) = await GrpcFrames.SendAsync(http, address, method.FullName(), body, key, timeoutMs: endless ? 300 : null);
            statuses[code] = statuses.GetValueOrDefault(code) + 1;
            Assert.True(Clear.Contains(code) || (endless && code == StatusCode.DeadlineExceeded), $"frame {i} to {method.FullName()} got {code} '{message}'; the engine's last lines:\n{engine.RecentOutput}");
            Assert.DoesNotContain("retry", message, StringComparison.OrdinalIgnoreCase);
            Assert.True(message.Length <= 1_100, $"frame {i}: a {message.Length}-character message");
            if (code == StatusCode.OK && (Writes.Contains(method.Name) || method.IsClientStreaming))
            {
                touched.UnionWith(parsed.SelectMany(Fuzzer.MembersOf));
            }
        }

        double seconds = clock.Elapsed.TotalSeconds;
        long logChars = engine.OutputChars - logBefore;
        output.WriteLine($"{frames} frames in {seconds:F1} s; statuses: {string.Join(", ", statuses.OrderBy(s => s.Key).Select(s => $"{s.Key} {s.Value}"))}; " +
            $"log {logChars:N0} characters ({logChars * 10_000.0 / frames:N0} per 10,000 frames); accepted writes touched {touched.Count} members");

        V1.Member alive = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m0" });
        Assert.Equal("m0", alive.MemberId);
        Assert.True(logChars * 10_000 / frames <= LogCharsPer10kMax, $"the engine logged {logChars:N0} characters for {frames} frames");
        // Every member whose ledger grew during the run was named by an accepted write.
        Dictionary<string, long> after = await LastSequencesAsync(storage);
        string[] grown = [.. after.Where(m => m.Value > before.GetValueOrDefault(m.Key)).Select(m => m.Key)];
        Assert.All(grown, m => Assert.True(touched.Contains(m), $"member '{m}' was written to, though no accepted call named it"));
    }

    private static async Task<Dictionary<string, long>> LastSequencesAsync(StorageOptions storage) =>
        (await Sql.RowsAsync(storage, "SELECT member_id, max(seq) FROM ledger_entries GROUP BY member_id", r => (r.GetString(0), r.GetInt64(1))))
            .ToDictionary(r => r.Item1, r => r.Item2, StringComparer.Ordinal);

    /// <summary>The frames: seeded, so a failure reproduces.</summary>
    private sealed class Fuzzer(int seed)
    {
        private readonly Random _random = new(seed);
        private readonly MethodDescriptor[] _methods = [.. RawCalls.AllMethods()];

        /// <summary>The members a request names (a batch names those of its purchases; a merge both sides).</summary>
        public static IEnumerable<string> MembersOf(IMessage message) => message switch
        {
            V1.PurchaseBatch batch => batch.Purchases.Select(p => p.MemberId),
            V1.MergeMembersRequest merge => [merge.SurvivorId, merge.DuplicateId],
            V1.SetReferrerRequest link => [link.MemberId, link.ReferredBy],
            V1.EnrollRequest enrol => [enrol.MemberId, enrol.ReferredBy],
            _ => message.Descriptor.FindFieldByName("member_id")?.Accessor.GetValue(message) is string member ? [member] : [],
        };

        /// <summary>Mostly the operator's key: the fuzz is about parsing, which comes after authentication.</summary>
        public string? Key() => _random.Next(20) switch
        {
            0 => null,
            1 => "lgk_" + new string('0', 16) + "." + new string('A', 43),
            _ => TestKeys.Operator,
        };

        public (MethodDescriptor Method, byte[] Body, IMessage[] Parsed) Next()
        {
            MethodDescriptor method = _methods[_random.Next(_methods.Length)];
            byte[] payload = _random.Next(10) switch
            {
                < 4 => RandomBytes(_random.Next(0, 300)),
                < 9 => Mutate(Valid(method).ToByteArray()),
                _ => Valid(method).ToByteArray(),
            };
            byte[] second = Mutate(Valid(method).ToByteArray());
            byte[] body = _random.Next(20) switch
            {
                0 => GrpcFrames.Frame(payload, declaredLength: (uint)(payload.Length + _random.Next(1, 100))),
                1 => GrpcFrames.Frame(payload, compressed: true),
                2 => [.. GrpcFrames.Frame(payload), .. RandomBytes(_random.Next(1, 4))],
                3 => [.. GrpcFrames.Frame(payload), .. GrpcFrames.Frame(second)],
                _ => GrpcFrames.Frame(payload),
            };
            return (method, body, [.. new[] { payload, second }.Select(p => TryParse(method, p)).OfType<IMessage>()]);
        }

        private static IMessage? TryParse(MethodDescriptor method, byte[] payload)
        {
            try
            {
                return method.InputType.Parser.ParseFrom(payload);
            }
            catch (InvalidProtocolBufferException)
            {
                return null;
            }
        }

        private IMessage Valid(MethodDescriptor method)
        {
            string member = $"m{_random.Next(MembersCount)}";
            IMessage message = method.InputType.Name switch
            {
                "Purchase" => Wire.Purchase(Program, member, $"f{_random.Next()}", _random.Next(1, 100_000)),
                "PurchaseBatch" => new V1.PurchaseBatch { Purchases = { Wire.Purchase(Program, member, $"f{_random.Next()}", 5_00) } },
                "AdjustPointsRequest" => new V1.AdjustPointsRequest { ProgramId = Program, MemberId = member, TransactionId = $"a{_random.Next()}", Points = 5, Reason = "fuzz" },
                _ => RawCalls.Request(method, Program),
            };
            method.InputType.FindFieldByName("member_id")?.Accessor.SetValue(message, member);
            return message;
        }

        private byte[] Mutate(byte[] bytes)
        {
            if (bytes.Length == 0)
            {
                return RandomBytes(8);
            }

            var mutated = new List<byte>(bytes);
            int edits = _random.Next(1, 6);
            for (int e = 0; e < edits && mutated.Count > 0; e++)
            {
                int at = _random.Next(mutated.Count);
                switch (_random.Next(4))
                {
                    case 0: mutated[at] = (byte)_random.Next(256); break;
                    case 1: mutated.RemoveAt(at); break;
                    case 2: mutated.Insert(at, (byte)_random.Next(256)); break;
                    default: mutated.RemoveRange(at, mutated.Count - at); break;
                }
            }

            return [.. mutated];
        }

        private byte[] RandomBytes(int count)
        {
            var bytes = new byte[count];
            _random.NextBytes(bytes);
            return bytes;
        }
    }
}
