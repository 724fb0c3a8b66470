using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Gateway;

/// <summary>
/// The Orleans Dashboard, served by the engine on its HTTP endpoint: only an operator key opens it
/// (as the Basic password a browser sends, or a bearer token); the page, its script and its data
/// calls all sit behind the key.
/// </summary>
public sealed class DashboardTests
{
    private static readonly string[] Paths = ["/dashboard/", "/dashboard/index.min.js", "/dashboard/ClusterStats", "/dashboard/DashboardCounters"];

    [Fact]
    public async Task Dashboard_OpensForAnOperatorKeyOnly_PageScriptAndDataAlike()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "dashboard"), null, "--Dashboard:Enabled=true");
        using var http = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(30) };
        string posKey = await PosKeyAsync(http);

        foreach (string path in Paths)
        {
            HttpResponseMessage anonymous = await http.GetAsync(path);
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.Equal("Basic", Assert.Single(anonymous.Headers.WwwAuthenticate).Scheme);
            Assert.Equal(HttpStatusCode.Unauthorized, (await GetAsync(http, path, Basic("ops", "lgk_0000000000000000.not-a-key"))).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await GetAsync(http, path, new AuthenticationHeaderValue("Basic", "%%%not-base64"))).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await GetAsync(http, path, Basic("till", posKey))).StatusCode);
        }

        HttpResponseMessage page = await GetAsync(http, "/dashboard/", Basic("ops", TestKeys.Operator));
        HttpResponseMessage script = await GetAsync(http, "/dashboard/index.min.js", new AuthenticationHeaderValue("Bearer", TestKeys.Operator));
        HttpResponseMessage stats = await GetAsync(http, "/dashboard/ClusterStats", Basic("ops", TestKeys.Operator));

        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("<html", await page.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(HttpStatusCode.OK, script.StatusCode);
        Assert.True((await script.Content.ReadAsByteArrayAsync()).Length > 10_000, "the dashboard's script is missing");
        Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
        using JsonDocument json = JsonDocument.Parse(await stats.Content.ReadAsStringAsync());
        Assert.NotEqual(JsonValueKind.Undefined, json.RootElement.ValueKind);
    }

    [Fact]
    public async Task Dashboard_ByDefault_IsNotServed()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "nodashboard"));
        using var http = new HttpClient { BaseAddress = new Uri(engine.HttpAddress), Timeout = TimeSpan.FromSeconds(30) };

        Assert.Equal(HttpStatusCode.NotFound, (await GetAsync(http, "/dashboard/", Basic("ops", TestKeys.Operator))).StatusCode);
    }

    private static AuthenticationHeaderValue Basic(string user, string password) =>
        new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));

    private static Task<HttpResponseMessage> GetAsync(HttpClient http, string path, AuthenticationHeaderValue authorization)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = authorization;
        return http.SendAsync(request);
    }

    private static async Task<string> PosKeyAsync(HttpClient http)
    {
        var put = new HttpRequestMessage(HttpMethod.Put, "/v1/programs/dash") { Content = JsonContent.Create(new { name = "Dash", currency = "USD", currencyExponent = 2, earnPointsPerUnit = 1 }) };
        put.Headers.Authorization = new AuthenticationHeaderValue("Bearer", TestKeys.Operator);
        (await http.SendAsync(put)).EnsureSuccessStatusCode();
        var create = new HttpRequestMessage(HttpMethod.Post, "/v1/keys") { Content = JsonContent.Create(new { programId = "dash", scope = "KEY_SCOPE_POS", name = "till" }) };
        create.Headers.Authorization = new AuthenticationHeaderValue("Bearer", TestKeys.Operator);
        HttpResponseMessage created = await http.SendAsync(create);
        created.EnsureSuccessStatusCode();
        using JsonDocument json = JsonDocument.Parse(await created.Content.ReadAsStringAsync());
        return json.RootElement.GetProperty("secret").GetString()!;
    }
}
