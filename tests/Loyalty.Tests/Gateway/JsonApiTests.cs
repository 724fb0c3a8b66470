using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Loyalty.Api;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>The unary calls as HTTP/JSON, over a real HTTP/1.1 client, behind the same keys, scopes and quotas.</summary>
public sealed class JsonApiTests
{
    private const string Program = "web";

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task JsonCalls_EarnAndRead_LikeGrpcOnes_WithTheSameKeys(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "json"));
        using HttpClient http = Client(engine, TestKeys.Operator);
        (await http.PutAsJsonAsync($"/v1/programs/{Program}", new { name = "Web shop", currency = "USD", currencyExponent = 2, earnPointsPerUnit = 1, maxBackdateDays = 3650 })).EnsureSuccessStatusCode();
        (await http.PostAsJsonAsync($"/v1/programs/{Program}/members", new { memberId = "ann" })).EnsureSuccessStatusCode();
        HttpResponseMessage created = await http.PostAsJsonAsync("/v1/keys", new { programId = Program, scope = "KEY_SCOPE_POS", name = "web shop" });
        string posKey = (await Json(created)).GetProperty("secret").GetString()!;
        using HttpClient shop = Client(engine, posKey);

        HttpResponseMessage purchase = await shop.PostAsJsonAsync($"/v1/programs/{Program}/purchases", new
        {
            transactionId = "web-1", memberId = "ann", storeId = "web", amountMinor = 12_50, currency = "USD",
            occurredAt = "2026-11-01T10:00:00Z", lineItems = new[] { new { sku = "tea", quantity = 1, amountMinor = 12_50 } },
        });
        JsonElement ack = await Json(purchase);
        JsonElement member = await Json(await shop.GetAsync($"/v1/programs/{Program}/members/ann"));

        Assert.Equal(HttpStatusCode.OK, purchase.StatusCode);
        Assert.Equal("ACK_STATUS_ACCEPTED", ack.GetProperty("status").GetString());
        Assert.Equal(12, ack.GetProperty("pointsEarned").GetInt64());
        Assert.Equal(12, member.GetProperty("balance").GetInt64());
        Assert.Equal(12, (await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "ann" })).Balance);
    }

    [Fact]
    public async Task JsonRefusals_CarryTheirHttpStatus_AndAStatusBody()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "jsonrefusals"), null,
            "--Quotas:Reader:UnaryPerSecond=0.1", "--Quotas:Reader:UnaryBurst=1");
        await engine.Programs.PutProgramAsync(Wire.Program(Program));
        await engine.Programs.PutProgramAsync(Wire.Program("other"));
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "ann" });
        var access = new V1.Access.AccessClient(engine.Invoker);
        string reader = (await access.CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Reader, Name = "r" })).Secret;
        using HttpClient anonymous = Client(engine, key: null);
        using HttpClient reading = Client(engine, reader);
        using HttpClient operatorClient = Client(engine, TestKeys.Operator);

        HttpResponseMessage noKey = await anonymous.GetAsync($"/v1/programs/{Program}/members/ann");
        HttpResponseMessage otherProgram = await reading.GetAsync("/v1/programs/other/members/ann");
        HttpResponseMessage write = await reading.PostAsJsonAsync($"/v1/programs/{Program}/members/ann/adjustments", new { transactionId = "a1", points = 5, reason = "x" });
        HttpResponseMessage first = await reading.GetAsync($"/v1/programs/{Program}/members/ann");
        HttpResponseMessage overQuota = await reading.GetAsync($"/v1/programs/{Program}/members/ann");
        HttpResponseMessage badJson = await operatorClient.PostAsync($"/v1/programs/{Program}/members", new StringContent("{not json", MediaTypeHeaderValue.Parse("application/json")));
        HttpResponseMessage missing = await operatorClient.GetAsync($"/v1/programs/{Program}/members/nobody");

        Assert.Equal(HttpStatusCode.Unauthorized, noKey.StatusCode);
        Assert.Equal(16, (await Json(noKey)).GetProperty("code").GetInt32());
        Assert.Equal(HttpStatusCode.Forbidden, otherProgram.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, overQuota.StatusCode);
        Assert.True(overQuota.Headers.RetryAfter?.Delta > TimeSpan.Zero, "no Retry-After");
        Assert.Equal(HttpStatusCode.BadRequest, badJson.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("nobody", (await Json(missing)).GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task OpenApiDocument_ListsTheRoutes_ForKeyHoldersOnly()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "openapi"));
        using HttpClient anonymous = Client(engine, key: null);
        using HttpClient keyed = Client(engine, TestKeys.Operator);

        HttpResponseMessage refused = await anonymous.GetAsync("/openapi/v1.json");
        JsonElement document = await Json(await keyed.GetAsync("/openapi/v1.json"));

        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        JsonElement paths = document.GetProperty("paths");
        Assert.True(paths.TryGetProperty("/v1/programs/{programId}/purchases", out JsonElement purchases), "no purchases route in " + string.Join(", ", paths.EnumerateObject().Select(p => p.Name)));
        Assert.True(purchases.TryGetProperty("post", out _));
        Assert.True(paths.TryGetProperty("/v1/keys", out _), "no keys route");
        // Every unary call has its route; the streams are gRPC only.
        Assert.Equal(RawCalls.AllMethods().Count(m => !m.IsClientStreaming && !m.IsServerStreaming), paths.EnumerateObject().Sum(p => p.Value.EnumerateObject().Count()));
        Assert.True(document.GetProperty("components").GetProperty("securitySchemes").TryGetProperty("bearer", out _));
    }

    [Fact]
    public async Task OpenApiDocument_CostsAUnaryCall_OfTheKeysQuota()
    {
        (InProcessEngine engine, string reader) = await ThrottledReader.StartAsync("openapiquota", Program, burst: 1);
        await using InProcessEngine started = engine;
        using HttpClient reading = Client(engine, reader);

        HttpResponseMessage first = await reading.GetAsync("/openapi/v1.json");
        HttpResponseMessage second = await reading.GetAsync("/openapi/v1.json");

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        // Before: every request built the document again, whatever the key's quota.
        Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
        Assert.True(second.Headers.RetryAfter?.Delta > TimeSpan.Zero, "no Retry-After");
    }

    [Fact]
    public async Task TheProgrammeCalls_AreHttpJsonToo_AStaleVersionIsRefused_AndAQuoteWritesNothing()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "json-programmes"));
        using HttpClient http = Client(engine, TestKeys.Operator);
        object settings = new
        {
            name = "Web shop", currency = "USD", currencyExponent = 2, earnPointsPerUnit = 1, maxBackdateDays = 3650,
            rewards = new[] { new { id = "tea", name = "Tea", kind = "REWARD_KIND_PRODUCT", pointsPrice = 10, sku = "TEA" } },
            membershipPlans = new[] { new { id = "club", name = "Club", feeMinor = 5_00, termMonths = 1, multiplierBp = 20_000 } },
        };
        (await http.PutAsJsonAsync($"/v1/programs/{Program}?expected_version=0", settings)).EnsureSuccessStatusCode();
        HttpResponseMessage stale = await http.PutAsJsonAsync($"/v1/programs/{Program}?expected_version=0", settings);
        (await http.PostAsJsonAsync($"/v1/programs/{Program}/members", new { memberId = "ann" })).EnsureSuccessStatusCode();
        HttpResponseMessage paid = await http.PostAsJsonAsync($"/v1/programs/{Program}/members/ann/membership/payments", new { paymentId = "inv-1", planId = "club", amountMinor = 5_00, currency = "USD" });
        HttpResponseMessage quote = await http.PostAsJsonAsync($"/v1/programs/{Program}/members/ann/quote", new
        {
            storeId = "web", amountMinor = 12_50, currency = "USD", occurredAt = DateTimeOffset.UtcNow.ToString("O"),
        });
        JsonElement rewards = await Json(await http.GetAsync($"/v1/programs/{Program}/members/ann/rewards"));
        long entries = await Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}'");

        // FAILED_PRECONDITION is HTTP 400 in gRPC's mapping; the body names the version.
        Assert.Equal((HttpStatusCode.BadRequest, HttpStatusCode.OK, HttpStatusCode.OK), (stale.StatusCode, paid.StatusCode, quote.StatusCode));
        Assert.Contains("is at version 1", await stale.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal("MEMBERSHIP_STATUS_ACTIVE", (await Json(paid)).GetProperty("membership").GetProperty("status").GetString());
        Assert.Equal(24, (await Json(quote)).GetProperty("points").GetInt64());
        Assert.Equal("REWARD_BLOCK_POINTS", rewards.GetProperty("rewards")[0].GetProperty("blockedBy").GetString());
        Assert.Equal(2, entries);
    }

    private static HttpClient Client(InProcessEngine engine, string? key)
    {
        var http = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(30) };
        if (key is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        return http;
    }

    private static async Task<JsonElement> Json(HttpResponseMessage response)
    {
        using JsonDocument document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return document.RootElement.Clone();
    }
}
