using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Reports;

/// <summary>
/// The report page in a real browser: headless Chromium (Debian's package; test.sh installs it)
/// loads the page from the engine, the page calls the report API with the key from the address's
/// fragment, and the rendered figures must be the API's.
/// </summary>
public sealed partial class ReportPageTests(ITestOutputHelper output)
{
    private static readonly TimeSpan BrowserTimeMax = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task ThePageRenderedByChromium_ShowsTheFiguresTheApiReturns()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero));
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "reportpage"), clock, "--Schedule:PollIntervalMs=50");
        await ProgramReportTests.PlayAYearAsync(engine, clock);
        V1.ProgramReport report = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(new V1.ProgramReportRequest
        {
            ProgramId = ProgramReportTests.Program, From = "2026-11-01", To = "2027-06-30", GroupBy = V1.ReportGrouping.Month,
        });

        string dom = await RenderAsync($"{engine.HttpAddress}/reports?program={ProgramReportTests.Program}&from=2026-11-01&to=2027-06-30&groupBy=REPORT_GROUPING_MONTH#key={WebUtility.UrlEncode(TestKeys.Operator)}");
        V1.ProgramReport november = await new V1.Reports.ReportsClient(engine.Invoker).GetProgramReportAsync(new V1.ProgramReportRequest
        {
            ProgramId = ProgramReportTests.Program, From = "2026-11-01", To = "2026-11-30",
        });
        string novemberDom = await RenderAsync($"{engine.HttpAddress}/reports?program={ProgramReportTests.Program}&from=2026-11-01&to=2026-11-30#key={WebUtility.UrlEncode(TestKeys.Operator)}");
        string wrongKey = await RenderAsync($"{engine.HttpAddress}/reports?program={ProgramReportTests.Program}#key=lgk_0000000000000000.nope");

        Assert.Contains("data-loaded=\"true\"", dom, StringComparison.Ordinal);
        V1.ProgramBalances closing = report.Total.Closing;
        Assert.Equal(Count(closing.Outstanding), Figure(dom, "outstanding"));
        Assert.Equal(Money(closing.LiabilityMinor), Figure(dom, "liability"));
        Assert.Equal(Money(closing.DeferredRevenueMinor), Figure(dom, "deferred"));
        Assert.Equal($"{closing.BreakageBp / 100.0:0.00} %".Replace(',', '.'), Figure(dom, "breakage"));
        Assert.Equal(Count(report.Total.Flows.Issued), Figure(dom, "issued"));
        Assert.Equal(Count(report.Total.Flows.Redeemed), Figure(dom, "redeemed"));
        Assert.Equal(Count(report.Total.Flows.Expired), Figure(dom, "expired"));
        Assert.Equal(Count(closing.Members), Figure(dom, "members"));
        Assert.Equal(report.Total.Nps.Nps.ToString("0.00", CultureInfo.InvariantCulture), Figure(dom, "nps"));
        Assert.Equal(report.Periods.Count, PeriodRow().Matches(dom).Count);
        // Eight months together have no exact repeat rate: the page shows none rather than a sum of months'.
        Assert.Equal((false, "\u2014"), (report.Total.Members.HasRepeatRateBp, Figure(dom, "repeat-rate")));
        Assert.Equal((true, $"{november.Total.Members.RepeatRateBp / 100.0:0.00} %".Replace(',', '.')), (november.Total.Members.HasRepeatRateBp, Figure(novemberDom, "repeat-rate")));
        Assert.True(november.Total.Members.RepeatRateBp > 0, "November's story has a repeat customer");
        Assert.True(report.Total.Flows.Redeemed > 0 && closing.LiabilityMinor != 0, "the story gives the page figures worth checking");
        Assert.Contains("data-loaded=\"error\"", wrongKey, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ThePage_IsServedWithAPolicyThatKeepsItsKeyInTheTab()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "reportpagehdr"));
        using var http = new HttpClient();

        HttpResponseMessage page = await http.GetAsync(engine.HttpAddress + "/reports");

        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        Assert.Contains("connect-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        Assert.Equal("no-referrer", page.Headers.GetValues("Referrer-Policy").Single());
        Assert.DoesNotContain(TestKeys.Operator, await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    private static string Count(long value) => value.ToString("#,0", CultureInfo.InvariantCulture);

    private static string Money(long minor) => (minor / 100m).ToString("#,0.00", CultureInfo.InvariantCulture) + " USD";

    private static string Figure(string dom, string name)
    {
        Match match = Regex.Match(dom, $"data-figure=\"{name}\">([^<]*)<");
        Assert.True(match.Success, $"the page shows no figure '{name}'");
        return WebUtility.HtmlDecode(match.Groups[1].Value);
    }

    [GeneratedRegex("<tr data-period=\"[0-9]+\"")]
    private static partial Regex PeriodRow();

    /// <summary>The page's DOM once its script has run, as headless Chromium prints it.</summary>
    private async Task<string> RenderAsync(string url)
    {
        string browser = new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("Chromium is not installed (Debian's chromium package; test.sh installs it when run as root).");
        var start = new ProcessStartInfo(browser)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in (string[])["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            $"--user-data-dir={TestDatabases.TempFolder()}", "--virtual-time-budget=20000", "--dump-dom", url])
        {
            start.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(start)!;
        Task<string> dom = process.StandardOutput.ReadToEndAsync();
        Task<string> errors = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(BrowserTimeMax);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"Chromium did not finish within {BrowserTimeMax}.");
        }

        string text = await dom;
        output.WriteLine(Regex.Match(text, "<p id=\"status\"[^>]*>([^<]*)<").Groups[1].Value);
        output.WriteLine($"chromium exited {process.ExitCode}; {text.Length} characters of DOM; stderr: {(await errors)[..Math.Min((await errors).Length, 500)]}");
        return text;
    }
}
