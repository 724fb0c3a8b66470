using Loyalty.Api;
using System.Text.Json;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>
/// The README's worked example, executed: every grpcurl block of the section is sent over a real
/// gRPC channel to a fresh engine, and each answer must contain what the README shows after it
/// (an error block must match the status code and message).
/// </summary>
public sealed partial class ReadmeExampleTests
{
    /// <summary>The moment the README's answers were produced at; its dates follow from it.</summary>
    private static readonly DateTimeOffset ExampleStart = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    /// <summary>How long a step after a clock jump may take to show the due work the scheduler does.</summary>
    private static readonly TimeSpan DueWaitMax = TimeSpan.FromSeconds(15);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ReadmeWorkedExample_EveryCall_AnswersAsDocumented(Backend backend)
    {
        List<Step> steps = ReadSteps();
        var clock = new FakeTimeProvider(ExampleStart);
        // As on a fresh machine: no configured key, so the first start writes one to the key file,
        // and the README's commands read it from there.
        string keyFile = Path.Combine(TestDatabases.TempFolder(), "operator.key");
        await using InProcessEngine engine = await InProcessEngine.StartAsync(
            TestDatabases.Create(backend, "readme"), clock, "--Schedule:PollIntervalMs=50", "--Auth:BootstrapOperatorKey=", $"--Auth:OperatorKeyFile={keyFile}");
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));
        }

        CallInvoker invoker = engine.Channel.WithKey(await File.ReadAllTextAsync(keyFile));

        foreach (Step step in steps)
        {
            if (step.ClockTo is { } to)
            {
                clock.Advance(to - clock.GetUtcNow());
            }

            DateTime deadline = DateTime.UtcNow + (step.ClockTo is null ? TimeSpan.Zero : DueWaitMax);
            while (!await RunAsync(invoker, step, DateTime.UtcNow >= deadline))
            {
                await Task.Delay(50);
            }
        }

        Assert.Equal(17, steps.Count);
        Assert.Single(steps, s => s.ClockTo is not null);
    }

    /// <summary>Sends one step; true when it answered as the README shows. Only the last try asserts.</summary>
    private static async Task<bool> RunAsync(CallInvoker invoker, Step step, bool lastTry)
    {
        {
            MethodDescriptor method = FindMethod(step.Method);
            IMessage request = JsonParser.Default.Parse(step.Request, method.InputType);
            var call = new Method<IMessage, IMessage>(MethodType.Unary, method.Service.FullName, method.Name,
                Marshallers.Create<IMessage>(m => m.ToByteArray(), method.InputType.Parser.ParseFrom),
                Marshallers.Create<IMessage>(m => m.ToByteArray(), method.OutputType.Parser.ParseFrom));
            try
            {
                IMessage response = await invoker.AsyncUnaryCall(call, null, new CallOptions(), request);
                string actual = JsonFormatter.Default.Format(response);
                bool expectsAnswer = step.Expected.Length > 0 && !step.Expected.StartsWith("ERROR:", StringComparison.Ordinal);
                using JsonDocument got = JsonDocument.Parse(actual);
                bool matches = expectsAnswer && Contains(got.RootElement, JsonDocument.Parse(step.Expected).RootElement);
                Assert.True(matches || !lastTry, $"{step.Method}: the README shows {step.Expected}\nthe engine answered {actual}");
                return matches;
            }
            catch (RpcException e)
            {
                string actual = $"ERROR:\n  Code: {e.StatusCode}\n  Message: {e.Status.Detail}";
                if (lastTry)
                {
                    Assert.Equal(step.Expected, actual);
                }

                return step.Expected == actual;
            }
        }
    }

    /// <summary>One grpcurl block and the answer shown after it; <see cref="ClockTo"/> is a clock jump the text makes before it.</summary>
    private sealed record Step(string Method, string Request, string Expected, DateTimeOffset? ClockTo);

    private static List<Step> ReadSteps()
    {
        string readme = File.ReadAllText(Path.Combine(RepoPaths.Root(), "README.md"));
        int start = readme.IndexOf("## Worked example", StringComparison.Ordinal);
        int end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        string section = readme[start..end];
        List<(int At, DateTimeOffset To)> jumps = [.. ClockPattern().Matches(section).Select(m =>
            (m.Index, DateTimeOffset.Parse(m.Groups["to"].Value, System.Globalization.CultureInfo.InvariantCulture)))];
        var steps = new List<Step>();
        int previous = 0;
        foreach (Match m in StepPattern().Matches(section))
        {
            DateTimeOffset? to = jumps.Where(j => j.At > previous && j.At < m.Index).Select(j => (DateTimeOffset?)j.To).LastOrDefault();
            steps.Add(new Step(m.Groups["method"].Value, m.Groups["request"].Value, m.Groups["expected"].Value.Trim(), to));
            previous = m.Index;
        }

        return steps;
    }

    private static MethodDescriptor FindMethod(string fullName)
    {
        string[] parts = fullName.Split('/');
        ServiceDescriptor service = V1.LoyaltyReflection.Descriptor.Services.Single(s => s.FullName == parts[0]);
        return service.FindMethodByName(parts[1]) ?? throw new InvalidOperationException($"No method {fullName}.");
    }

    /// <summary>True when every property the README shows is in the answer with the same value (lists element by element).</summary>
    private static bool Contains(JsonElement actual, JsonElement expected) => expected.ValueKind switch
    {
        JsonValueKind.Object => actual.ValueKind == JsonValueKind.Object
            && expected.EnumerateObject().All(p => actual.TryGetProperty(p.Name, out JsonElement a) && Contains(a, p.Value)),
        JsonValueKind.Array => actual.ValueKind == JsonValueKind.Array && actual.GetArrayLength() == expected.GetArrayLength()
            && actual.EnumerateArray().Zip(expected.EnumerateArray()).All(pair => Contains(pair.First, pair.Second)),
        _ => actual.ValueKind == expected.ValueKind && actual.GetRawText() == expected.GetRawText(),
    };

    [GeneratedRegex(@"```bash\ngrpcurl -plaintext -H ""authorization: Bearer \$\(cat data/operator\.key\)"" -d @ 127\.0\.0\.1:5000 (?<method>[\w.]+/\w+) <<'EOF'\n(?<request>.*?)\nEOF\n```\n```(?:json|text)\n(?<expected>.*?)\n```", RegexOptions.Singleline)]
    private static partial Regex StepPattern();

    [GeneratedRegex(@"<!-- clock: (?<to>\S+) -->")]
    private static partial Regex ClockPattern();
}
