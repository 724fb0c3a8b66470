using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Loyalty.Host;

/// <summary>
/// OpenTelemetry, exported over OTLP when the standard variables name a collector
/// (<c>OTEL_EXPORTER_OTLP_ENDPOINT</c>, <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>, <c>OTEL_SERVICE_NAME</c>, …, as
/// environment variables or configuration keys): the engine's meters (<c>Loyalty.*</c>), Orleans'
/// and ASP.NET Core's, and traces of the gateway's calls and of grain calls. Without an endpoint
/// nothing is collected, so nothing is sent anywhere by surprise.
/// </summary>
public static class Telemetry
{
    /// <summary>The configuration key that turns the export on.</summary>
    public const string EndpointKey = "OTEL_EXPORTER_OTLP_ENDPOINT";

    /// <summary>The runtime's own meter: collections and their pause time (<c>dotnet.gc.pause.time</c>), heap sizes, thread pool.</summary>
    private const string RuntimeMeter = "System.Runtime";

    /// <summary>Whether <paramref name="configuration"/> names a collector, so that telemetry is collected and exported.</summary>
    public static bool Exports(IConfiguration configuration) => !string.IsNullOrEmpty(configuration[EndpointKey]);

    /// <summary>Adds the export when an endpoint is configured.</summary>
    public static WebApplicationBuilder AddLoyaltyTelemetry(this WebApplicationBuilder builder)
    {
        if (!Exports(builder.Configuration))
        {
            return builder;
        }

        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(builder.Configuration["OTEL_SERVICE_NAME"] ?? "loyaltygrains"))
            .WithMetrics(m => m
                .AddMeter("Loyalty.*", "Microsoft.Orleans", "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", RuntimeMeter)
                .AddOtlpExporter())
            .WithTracing(t => t
                .AddSource("Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application")
                .AddAspNetCoreInstrumentation()
                .AddOtlpExporter());
        return builder;
    }
}
