using System.Text;
using Loyalty.Host.Access;
using Orleans.Dashboard;

namespace Loyalty.Host.Grpc;

/// <summary>The Orleans Dashboard's switches. Bound from the <c>Dashboard</c> configuration section.</summary>
public sealed class DashboardSettings
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Dashboard";

    /// <summary>Whether the engine serves the dashboard (operator keys only); off unless asked for, as it costs memory (about 60 MiB resident on start).</summary>
    public bool Enabled { get; set; }

    /// <summary>Whether the dashboard may stream the engine's log live (it can name members); off unless asked for.</summary>
    public bool ShowLog { get; set; }
}

/// <summary>
/// The Orleans Dashboard for operators, at <see cref="Path"/> on the HTTP endpoint: silos, grain
/// activations and calls, method timings. It shows every program's grains, so only an operator key
/// opens it, given as the password of HTTP Basic authentication (the browser asks once and sends it
/// with every request the page makes; any user name) or as a bearer token. Grain call profiling runs
/// only while somebody watches (Orleans' default), so an unwatched dashboard costs the hot path nothing
/// more than a check per grain call.
/// </summary>
public static class Dashboard
{
    /// <summary>Where the dashboard is served.</summary>
    public const string Path = "/dashboard";

    /// <summary>The longest authorization header considered: a Basic header with a short user name and a key.</summary>
    private const int AuthorizationLengthMax = 512;

    private const string Challenge = "Basic realm=\"LoyaltyGrains dashboard: an operator key as the password\", charset=\"UTF-8\"";

    /// <summary>Adds the dashboard's silo services when it is enabled.</summary>
    public static ISiloBuilder AddLoyaltyDashboard(this ISiloBuilder silo, DashboardSettings settings)
    {
        if (settings.Enabled)
        {
            silo.AddDashboard(o => o.HideTrace = !settings.ShowLog);
        }

        return silo;
    }

    /// <summary>Serves the dashboard, behind an operator key, when it is enabled.</summary>
    public static WebApplication MapLoyaltyDashboard(this WebApplication app, DashboardSettings settings)
    {
        if (!settings.Enabled)
        {
            return app;
        }

        app.Use(static async (context, next) =>
        {
            if (context.Request.Path.StartsWithSegments(Path, StringComparison.OrdinalIgnoreCase) && Refuse(context) is { } status)
            {
                context.Response.StatusCode = status;
                if (status == StatusCodes.Status401Unauthorized)
                {
                    context.Response.Headers.WWWAuthenticate = Challenge;
                }

                await context.Response.WriteAsync(status == StatusCodes.Status401Unauthorized
                    ? "The dashboard needs an operator key (as the password)."
                    : "Only operator keys open the dashboard.");
                return;
            }

            await next(context);
        });
        app.MapOrleansDashboard(Path);
        return app;
    }

    /// <summary>401 without a valid key, 403 for a key that is not an operator's, null to serve.</summary>
    private static int? Refuse(HttpContext context)
    {
        KeyRegistry keys = context.RequestServices.GetRequiredService<KeyRegistry>();
        string? bearer = AsBearer(context.Request.Headers.Authorization.ToString());
        if (keys.Authenticate(bearer, out string failure) is not { } caller)
        {
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.Unauthenticated, Path, failure);
            return StatusCodes.Status401Unauthorized;
        }

        if (caller.Key.Scope != AccessScope.Operator)
        {
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.PermissionDenied, Path, "the dashboard is for operator keys");
            return StatusCodes.Status403Forbidden;
        }

        return null;
    }

    /// <summary>The header as a bearer token: Basic credentials give their password; anything else is passed on as it is.</summary>
    private static string? AsBearer(string authorization)
    {
        if (authorization.Length == 0 || authorization.Length > AuthorizationLengthMax)
        {
            return null;
        }

        if (!authorization.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            return authorization;
        }

        ReadOnlySpan<char> encoded = authorization.AsSpan(6).Trim();
        Span<byte> decoded = stackalloc byte[AuthorizationLengthMax];
        if (!Convert.TryFromBase64Chars(encoded, decoded, out int length))
        {
            return null;
        }

        string credentials = Encoding.UTF8.GetString(decoded[..length]);
        int colon = credentials.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? null : "Bearer " + credentials[(colon + 1)..];
    }
}
