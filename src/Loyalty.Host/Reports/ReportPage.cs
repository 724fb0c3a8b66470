using System.Reflection;

namespace Loyalty.Host.Reports;

/// <summary>
/// The programme report page: one static HTML file with its script and charts inline (no library,
/// nothing fetched from elsewhere). It holds no data; it asks <c>GET /v1/programs/{id}/report</c>
/// with the key the user types (or passes in the address's fragment, which browsers never send),
/// so the keys guard the figures exactly as they guard the API.
/// </summary>
public static class ReportPage
{
    /// <summary>Where the page is served on the HTTP endpoint.</summary>
    public const string Path = "/reports";

    /// <summary>
    /// Only this page's inline script and styles run, and it may call only this engine; it cannot be
    /// framed, and no address (with a key in it) leaves as a referrer.
    /// </summary>
    private const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

    private static readonly Lazy<byte[]> Html = new(static () =>
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Loyalty.Host.Reports.report-page.html")
            ?? throw new InvalidOperationException("The report page is not embedded in the engine.");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    });

    /// <summary>Serves the page at <see cref="Path"/>.</summary>
    public static WebApplication MapReportPage(this WebApplication app)
    {
        app.MapGet(Path, static (HttpContext context) =>
        {
            context.Response.Headers.ContentSecurityPolicy = ContentSecurityPolicy;
            context.Response.Headers["Referrer-Policy"] = "no-referrer";
            context.Response.Headers.XContentTypeOptions = "nosniff";
            context.Response.Headers.CacheControl = "no-store";
            return Results.Bytes(Html.Value, "text/html; charset=utf-8");
        });
        return app;
    }
}
