using System.Net;
using System.Text;
using System.Text.Json;
using Grpc.Core;
using Loyalty.Host.Grpc;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Hostile;

/// <summary>
/// HTTP/JSON bodies as a hostile client sends them: walked before JSON transcoding parses them,
/// refused before they are read when the key may not make the call, and answered with bounded
/// messages when transcoding cannot convert them.
/// </summary>
public sealed class JsonBodyTests
{
    private const string Program = "jsonbody";

    [Fact]
    public async Task BodiesOfEmptyOrCountlessParts_AreRefusedBeforeTheyBecomeObjects_AsTooLarge()
    {
        await using InProcessEngine engine = await StartAsync();
        using HttpClient json = Client(engine, TestKeys.Operator);
        // A program of 1.3 million empty campaigns (4 MiB; each one five empty lists when parsed),
        // a purchase of 150,000 line items with something in them, a profile of 100,000 fields.
        string campaigns = "{\"name\":\"Shop\",\"currency\":\"USD\",\"campaigns\":[" + Repeat("{}", 1_300_000) + "]}";
        string lines = "{\"memberId\":\"m1\",\"transactionId\":\"t-lines\",\"amountMinor\":\"100\",\"currency\":\"USD\",\"lineItems\":["
            + Repeat("{\"sku\":\"a\"}", 150_000) + "]}";
        string fields = "{\"fields\":{" + string.Join(',', Enumerable.Range(0, 100_000).Select(i => $"\"f{i}\":\"\"")) + "}}";
        await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/members/m1/quote", "{\"amountMinor\":\"100\",\"currency\":\"USD\"}");
        Host.ClientFaults faults = engine.Services.GetRequiredService<Host.ClientFaults>();
        long faultsBefore = faults.Total;

        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        (HttpStatusCode Status, string Body) program = await SendAsync(json, HttpMethod.Put, $"/v1/programs/{Program}", campaigns);
        (HttpStatusCode Status, string Body) purchase = await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/purchases", lines);
        (HttpStatusCode Status, string Body) profile = await SendAsync(json, HttpMethod.Put, $"/v1/programs/{Program}/members/m1/profile", fields);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m1" });

        Assert.Equal((HttpStatusCode.RequestEntityTooLarge, 8), (program.Status, Code(program.Body)));
        Assert.Contains($"more than {JsonShape.ObjectsFree} empty JSON objects", program.Body, StringComparison.Ordinal);
        Assert.Equal((HttpStatusCode.RequestEntityTooLarge, 8), (purchase.Status, Code(purchase.Body)));
        Assert.Contains($"more than {JsonShape.MembersMax} members", purchase.Body, StringComparison.Ordinal);
        Assert.Equal((HttpStatusCode.RequestEntityTooLarge, 8), (profile.Status, Code(profile.Body)));
        Assert.Equal(3, faults.Total - faultsBefore);
        Assert.Equal(0, member.Balance);
        Assert.Empty(member.Profile);
        // Before: about half a gigabyte for the program alone. What is left is mostly the test's own
        // strings and bodies (UTF-16 and UTF-8) and the server's copy of each body.
        Assert.True(allocated < 96L * 1024 * 1024, $"{allocated:N0} bytes allocated");
    }

    [Fact]
    public void TheScenarioPrograms_AndBodiesAtTheApisLimits_PassTheWalk()
    {
        var settings = new V1.ProgramSettings { Name = "Big", Currency = "USD", CurrencyExponent = 2, EarnPointsPerUnit = 1 };
        settings.ProductRules.Add(Enumerable.Range(0, Limits.ProductRulesMax).Select(i => new V1.ProductRule { Sku = $"s{i}", MultiplierBp = 20_000 }));
        settings.Rewards.Add(Enumerable.Range(0, Limits.RewardsMax).Select(i => new V1.Reward { Id = $"r{i}", Name = "Reward", PointsPrice = 100 }));
        settings.Campaigns.Add(Enumerable.Range(0, Limits.CampaignsMax).Select(i => new V1.Campaign { Id = $"c{i}", Name = "Campaign" }));
        V1.Purchase lines = Wire.Purchase(Program, "m1", "t-lines", 10_00);
        lines.LineItems.Add(Enumerable.Range(0, Limits.LineItemsMax).Select(_ => new V1.LineItem { Quantity = 1 }));
        string[] scenarios = Directory.GetFiles(Path.Combine(RepoPaths.Root(), "scenarios"), "*.json");

        Assert.NotEmpty(scenarios);
        Assert.All(scenarios, file => Assert.Null(JsonShape.Check(File.ReadAllBytes(file))));
        Assert.Null(JsonShape.Check(Encoding.UTF8.GetBytes(Google.Protobuf.JsonFormatter.Default.Format(settings))));
        Assert.Null(JsonShape.Check(Encoding.UTF8.GetBytes(Google.Protobuf.JsonFormatter.Default.Format(lines))));
        // A byte order mark, which some writers put first and JSON transcoding skips.
        Assert.Null(JsonShape.Check([0xEF, 0xBB, 0xBF, .. "{\"memberId\":\"bom\"}"u8]));
    }

    [Fact]
    public async Task BodiesThatAreNotJson_OrHoldOverlongText_AreInvalidArgument_QuotingNoneOfIt()
    {
        await using InProcessEngine engine = await StartAsync();
        using HttpClient json = Client(engine, TestKeys.Operator);
        string longName = new('n', 5_000);

        (HttpStatusCode Status, string Body)[] answers =
        [
            await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/members", "{\"memberId\":\"x\"" + new string(' ', 10) + "garbage"),
            await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/members", "{\"memberId\":\"" + new string('x', 20_000) + "\"}"),
            await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/members", "{\"" + longName + "\":1}"),
            await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/members/m1/adjustments", "{\"points\":" + new string('9', 1_000) + "}"),
        ];

        Assert.All(answers, a => Assert.Equal((HttpStatusCode.BadRequest, 3), (a.Status, Code(a.Body))));
        Assert.Contains("not valid JSON", answers[0].Body, StringComparison.Ordinal);
        Assert.Contains($"longer than {JsonShape.StringBytesMax} bytes", answers[1].Body, StringComparison.Ordinal);
        Assert.Contains($"longer than {JsonShape.PropertyNameBytesMax} bytes", answers[2].Body, StringComparison.Ordinal);
        Assert.Contains($"longer than {JsonShape.NumberBytesMax} bytes", answers[3].Body, StringComparison.Ordinal);
        Assert.All(answers, a => Assert.True(a.Body.Length < 400, $"the answer is {a.Body.Length} characters"));
    }

    [Fact]
    public async Task WhatJsonTranscodingCannotConvert_IsAnsweredBounded_AndCountedAsTheClientsFault()
    {
        await using InProcessEngine engine = await StartAsync();
        using HttpClient json = Client(engine, TestKeys.Operator);
        Host.ClientFaults faults = engine.Services.GetRequiredService<Host.ClientFaults>();
        long faultsBefore = faults.Total;
        string purchase = "{\"memberId\":\"m1\",\"transactionId\":\"t-enum\",\"amountMinor\":\"100\",\"currency\":\"USD\",\"channel\":\"" + new string('c', 12_000) + "\"}";
        string amount = "{\"memberId\":\"m1\",\"transactionId\":\"t-amount\",\"amountMinor\":\"" + new string('a', 12_000) + "\",\"currency\":\"USD\"}";

        (HttpStatusCode Status, string Body) channel = await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/purchases", purchase);
        (HttpStatusCode Status, string Body) number = await SendAsync(json, HttpMethod.Post, $"/v1/programs/{Program}/purchases", amount);
        using var typed = new HttpRequestMessage(HttpMethod.Post, $"/v1/programs/{Program}/members")
        {
            Content = new ByteArrayContent("{\"memberId\":\"ct\"}"u8.ToArray()),
        };
        typed.Content.Headers.TryAddWithoutValidation("Content-Type", "text/plain; a=" + new string('t', 12_000));
        using HttpResponseMessage typedAnswer = await json.SendAsync(typed);
        string typedBody = await typedAnswer.Content.ReadAsStringAsync();
        V1.Member member = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m1" });

        // Before: each answer quoted the value whole (about 12,000 characters).
        Assert.Equal((HttpStatusCode.BadRequest, 3), (channel.Status, Code(channel.Body)));
        Assert.Equal((HttpStatusCode.BadRequest, 3), (number.Status, Code(number.Body)));
        Assert.Equal(HttpStatusCode.BadRequest, typedAnswer.StatusCode);
        Assert.All((string[])[channel.Body, number.Body, typedBody], body => Assert.True(body.Length < 1_200, $"the answer is {body.Length} characters"));
        Assert.Equal(3, faults.Total - faultsBefore);
        Assert.Equal(0, member.Balance);
    }

    [Fact]
    public async Task AKeyThatMayNotMakeTheCall_IsRefusedBeforeItsBodyIsRead()
    {
        await using InProcessEngine engine = await StartAsync();
        var access = new V1.Access.AccessClient(engine.Invoker);
        V1.CreatedKey reader = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Reader, Name = "reports" });
        await engine.Programs.PutProgramAsync(Wire.Program("other"));
        V1.CreatedKey other = await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = "other", Scope = V1.KeyScope.Pos, Name = "other tills" });
        string campaigns = "{\"name\":\"Shop\",\"currency\":\"USD\",\"campaigns\":[" + Repeat("{}", 1_300_000) + "]}";
        using HttpClient readerClient = Client(engine, reader.Secret), otherClient = Client(engine, other.Secret);

        // Both wait for "100 Continue" before sending the body: refused first, it is never sent.
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        (HttpStatusCode Status, string Body) program = await SendAsync(readerClient, HttpMethod.Put, $"/v1/programs/{Program}", campaigns, expectContinue: true);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        (HttpStatusCode Status, string Body) enrol = await SendAsync(otherClient, HttpMethod.Post, $"/v1/programs/{Program}/members", "{\"memberId\":\"intruder\"}", expectContinue: true);
        RpcException missing = await Assert.ThrowsAsync<RpcException>(() =>
            engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "intruder" }).ResponseAsync);

        // Before: the program's body was parsed (half a gigabyte of objects), then refused.
        Assert.Equal((HttpStatusCode.Forbidden, 7), (program.Status, Code(program.Body)));
        Assert.Contains("key may not call /loyalty.v1.ProgramAdmin/PutProgram", program.Body, StringComparison.Ordinal);
        Assert.Equal((HttpStatusCode.Forbidden, 7), (enrol.Status, Code(enrol.Body)));
        Assert.Contains($"another program than '{Program}'", enrol.Body, StringComparison.Ordinal);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        // The test's own body (as a string and as bytes) is most of it.
        Assert.True(allocated < 48L * 1024 * 1024, $"{allocated:N0} bytes allocated");
    }

    [Fact]
    public async Task AnUnknownGrpcEncoding_IsUnimplemented_QuotingTheHeaderBounded()
    {
        await using InProcessEngine engine = await StartAsync();
        using HttpClient http = GrpcFrames.Client();
        byte[] frame = GrpcFrames.Frame([0x0A, 0x01, 0x41], compressed: true);
        Host.ClientFaults faults = engine.Services.GetRequiredService<Host.ClientFaults>();
        long faultsBefore = faults.Total;

        (StatusCode Code, string Message) answer = await GrpcFrames.SendAsync(http, engine.Address, "/loyalty.v1.Members/GetMember", frame, TestKeys.Operator,
            encoding: "x-" + new string('e', 6_000));

        // Before: grpc-dotnet's message quoted all 6,002 characters of the header.
        Assert.Equal(StatusCode.Unimplemented, answer.Code);
        Assert.Contains("grpc-encoding 'x-eee", answer.Message, StringComparison.Ordinal);
        Assert.True(answer.Message.Length < 200, $"the message is {answer.Message.Length} characters");
        Assert.Equal(1, faults.Total - faultsBefore);
    }

    [Fact]
    public async Task PerksAndCampaignNames_WithControlCharacters_AreInvalidArgument_NamingTheText()
    {
        await using InProcessEngine engine = await StartAsync();
        V1.PutProgramRequest perks = Wire.Program("perks");
        perks.Settings.Tiers = Ladder(new V1.Tier { Name = "Member", Perks = { "Free delivery", "Early\u0007access" } });
        V1.PutProgramRequest blank = Wire.Program("blank");
        blank.Settings.Tiers = Ladder(new V1.Tier { Name = "Member", Perks = { "  " } });

        RpcException control = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(perks).ResponseAsync);
        RpcException empty = await Assert.ThrowsAsync<RpcException>(() => engine.Programs.PutProgramAsync(blank).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, control.StatusCode);
        Assert.Contains(".perks[1] may not contain control characters", control.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, empty.StatusCode);
        Assert.Contains(".perks[0] is required", empty.Status.Detail, StringComparison.Ordinal);
    }

    private static V1.TierLadder Ladder(V1.Tier tier) => new() { Basis = V1.TierBasis.Points, WindowDays = 365, Tiers = { tier } };

    private static string Repeat(string part, int times) => string.Join(',', Enumerable.Repeat(part, times));

    private static int Code(string body)
    {
        using var document = JsonDocument.Parse(body);
        return document.RootElement.GetProperty("code").GetInt32();
    }

    private static HttpClient Client(InProcessEngine engine, string key)
    {
        var client = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private static async Task<(HttpStatusCode Status, string Body)> SendAsync(HttpClient client, HttpMethod method, string path, string body, bool expectContinue = false)
    {
        using var request = new HttpRequestMessage(method, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.ExpectContinue = expectContinue;
        using HttpResponseMessage answer = await client.SendAsync(request);
        return (answer.StatusCode, await answer.Content.ReadAsStringAsync());
    }

    private static async Task<InProcessEngine> StartAsync()
    {
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "jsonbody"), null, []);
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m1" });
        return engine;
    }
}
