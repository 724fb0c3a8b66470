using System.Globalization;
using System.Net;
using System.Text;
using HdrHistogram;

namespace Loyalty.LoadTest;

/// <summary>A self-contained HTML page: the JSON report, throughput over time and the latency distribution as inline SVG.</summary>
internal static class HtmlReport
{
    private const int Width = 760;
    private const int Height = 260;
    private const int Margin = 50;
    private static readonly double[] Percentiles = [0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100];

    public static string Render(string json, IReadOnlyList<LoadRun.TimelinePoint> timeline, LongHistogram latency)
    {
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>LoyaltyGrains load test</title>")
            .Append("<style>body{font-family:sans-serif;margin:2em;color:#222}svg{background:#fafafa;border:1px solid #ddd}")
            .Append("pre{background:#f4f4f4;padding:1em}text{font-size:11px}</style></head><body>")
            .Append("<h1>LoyaltyGrains load test</h1>")
            .Append("<h2>Throughput (acknowledged events per second)</h2>")
            .Append(Chart([.. timeline.Select(p => (p.Seconds, p.PerSecond))], "s", "ev/s", i => timeline[i].Seconds.ToString("F0", CultureInfo.InvariantCulture)))
            .Append("<h2>Errors per second (failed streams, refused purchases; a failover shows here)</h2>")
            .Append(Chart([.. timeline.Select(p => (p.Seconds, p.ErrorsPerSecond))], "s", "errors/s", i => timeline[i].Seconds.ToString("F0", CultureInfo.InvariantCulture), "#c0392b"))
            .Append("<h2>Ack latency by percentile (ms)</h2>")
            .Append(Chart([.. Percentiles.Select((p, i) => ((double)i, latency.TotalCount == 0 ? 0 : latency.GetValueAtPercentile(p) / 1000.0))],
                "percentile", "ms", i => Percentiles[i].ToString(CultureInfo.InvariantCulture)))
            .Append("<h2>Report</h2><pre>").Append(WebUtility.HtmlEncode(json)).Append("</pre></body></html>");
        return html.ToString();
    }

    private static string Chart(IReadOnlyList<(double X, double Y)> points, string xLabel, string yLabel, Func<int, string> tick, string colour = "#2a6fdb")
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg width=\"{Width}\" height=\"{Height}\" xmlns=\"http://www.w3.org/2000/svg\">");
        if (points.Count == 0)
        {
            return svg.Append("<text x=\"10\" y=\"20\">no data</text></svg>").ToString();
        }

        double xMin = points.Min(p => p.X), xMax = Math.Max(points.Max(p => p.X), xMin + 1e-9), yMax = Math.Max(points.Max(p => p.Y), 1e-9);
        double Px(double x) => Margin + ((x - xMin) / (xMax - xMin) * (Width - (2 * Margin)));
        double Py(double y) => Height - Margin - (y / yMax * (Height - (2 * Margin)));
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Margin}\" y1=\"{Height - Margin}\" x2=\"{Width - Margin}\" y2=\"{Height - Margin}\" stroke=\"#888\"/>")
            .Append(CultureInfo.InvariantCulture, $"<line x1=\"{Margin}\" y1=\"{Margin}\" x2=\"{Margin}\" y2=\"{Height - Margin}\" stroke=\"#888\"/>")
            .Append(CultureInfo.InvariantCulture, $"<text x=\"{Width - Margin}\" y=\"{Height - 10}\" text-anchor=\"end\">{xLabel}</text>")
            .Append(CultureInfo.InvariantCulture, $"<text x=\"5\" y=\"{Margin - 10}\">{yLabel} (max {yMax:F1})</text>")
            .Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"");
        foreach ((double x, double y) in points)
        {
            svg.Append(CultureInfo.InvariantCulture, $"{Px(x):F1},{Py(y):F1} ");
        }

        svg.Append("\"/>");
        int step = Math.Max(1, points.Count / 10);
        for (int i = 0; i < points.Count; i += step)
        {
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Px(points[i].X):F1}\" y=\"{Height - Margin + 15}\" text-anchor=\"middle\">{tick(i)}</text>");
        }

        return svg.Append("</svg>").ToString();
    }
}
