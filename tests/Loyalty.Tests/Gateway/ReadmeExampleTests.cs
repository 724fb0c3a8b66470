using System.Text.Json;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>
/// The README's worked example, executed: every grpcurl block of the section is sent over a real
/// gRPC channel to a fresh engine, and each answer must contain what the README shows after it
/// (an error block must match the status code and message).
/// </summary>
public sealed partial class ReadmeExampleTests
{
    [Fact]
    public async Task ReadmeWorkedExample_EveryCall_AnswersAsDocumented()
    {
        List<Step> steps = ReadSteps();
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "readme"));
        CallInvoker invoker = engine.Channel.CreateCallInvoker();

        foreach (Step step in steps)
        {
            MethodDescriptor method = FindMethod(step.Method);
            IMessage request = JsonParser.Default.Parse(step.Request, method.InputType);
            var call = new Method<IMessage, IMessage>(MethodType.Unary, method.Service.FullName, method.Name,
                Marshallers.Create<IMessage>(m => m.ToByteArray(), method.InputType.Parser.ParseFrom),
                Marshallers.Create<IMessage>(m => m.ToByteArray(), method.OutputType.Parser.ParseFrom));
            try
            {
                IMessage response = await invoker.AsyncUnaryCall(call, null, new CallOptions(), request);
                Assert.True(step.Expected.Length > 0 && !step.Expected.StartsWith("ERROR:", StringComparison.Ordinal), $"{step.Method} succeeded, the README says: {step.Expected}");
                string actual = JsonFormatter.Default.Format(response);
                using JsonDocument expected = JsonDocument.Parse(step.Expected), got = JsonDocument.Parse(actual);
                Assert.True(Contains(got.RootElement, expected.RootElement), $"{step.Method}: the README shows {step.Expected}\nthe engine answered {actual}");
            }
            catch (RpcException e)
            {
                Assert.Equal(step.Expected, $"ERROR:\n  Code: {e.StatusCode}\n  Message: {e.Status.Detail}");
            }
        }

        Assert.Equal(7, steps.Count);
    }

    private sealed record Step(string Method, string Request, string Expected);

    private static List<Step> ReadSteps()
    {
        string readme = File.ReadAllText(Path.Combine(RepoPaths.Root(), "README.md"));
        int start = readme.IndexOf("## Worked example", StringComparison.Ordinal);
        int end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        string section = readme[start..end];
        return [.. StepPattern().Matches(section).Select(m => new Step(m.Groups["method"].Value, m.Groups["request"].Value, m.Groups["expected"].Value.Trim()))];
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

    [GeneratedRegex(@"```bash\ngrpcurl -plaintext -d @ 127\.0\.0\.1:5000 (?<method>[\w.]+/\w+) <<'EOF'\n(?<request>.*?)\nEOF\n```\n```(?:json|text)\n(?<expected>.*?)\n```", RegexOptions.Singleline)]
    private static partial Regex StepPattern();
}
