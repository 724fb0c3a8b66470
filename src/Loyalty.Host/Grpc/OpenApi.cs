using Loyalty.Host.Access;
using Microsoft.OpenApi.Models;

namespace Loyalty.Host.Grpc;

/// <summary>
/// The OpenAPI document of the HTTP/JSON API, made from the .proto's routes and comments, served
/// at <see cref="DocumentPath"/> to callers with a valid key (like reflection, it describes the
/// engine to no one else).
/// </summary>
public static class OpenApi
{
    /// <summary>Where the document is served.</summary>
    public const string DocumentPath = "/openapi/v1.json";

    /// <summary>Adds the document's generator.</summary>
    public static IServiceCollection AddLoyaltyOpenApi(this IServiceCollection services)
    {
        services.AddGrpcSwagger();
        services.AddSwaggerGen(o =>
        {
            o.SwaggerDoc("v1", new OpenApiInfo
            {
                Title = "LoyaltyGrains",
                Version = "v1",
                Description = "The loyalty engine's unary calls as HTTP/JSON. Send 'Authorization: Bearer <key>' with every call; " +
                    "refusals are google.rpc.Status bodies with the HTTP status of their gRPC code (401, 403, 429 with Retry-After, …).",
            });
            var bearer = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = "An API key (lgk_…), made by the Access service.",
                Reference = new OpenApiReference { Type = ReferenceType.SecurityScheme, Id = "bearer" },
            };
            o.AddSecurityDefinition("bearer", bearer);
            o.AddSecurityRequirement(new OpenApiSecurityRequirement { [bearer] = [] });
            string comments = Path.Combine(AppContext.BaseDirectory, "Loyalty.Api.xml");
            if (File.Exists(comments))
            {
                o.IncludeGrpcXmlComments(comments, includeControllerXmlComments: true);
            }
        });
        return services;
    }

    /// <summary>Serves the document, to callers with a valid key only.</summary>
    public static IApplicationBuilder UseLoyaltyOpenApi(this IApplicationBuilder app)
    {
        app.Use(static async (context, next) =>
        {
            if (!context.Request.Path.StartsWithSegments("/openapi", StringComparison.OrdinalIgnoreCase))
            {
                await next(context);
                return;
            }

            ClientFaults faults = context.RequestServices.GetRequiredService<ClientFaults>();
            if (context.RequestServices.GetRequiredService<KeyRegistry>().Authenticate(context.Request.Headers.Authorization, out string failure) is not { } caller)
            {
                faults.Record(ClientFaultKind.Unauthenticated, context.Request.Path, failure);
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                await context.Response.WriteAsJsonAsync(new { code = 16, message = failure });
                return;
            }

            // The document is built from the descriptors on each request: it costs a unary call.
            if (!caller.Quota.TryTakeUnary(out TimeSpan retryAfter))
            {
                faults.Record(ClientFaultKind.QuotaExceeded, context.Request.Path, "the key's call rate");
                long milliseconds = TokenBucket.WholeMilliseconds(retryAfter);
                context.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                context.Response.Headers.RetryAfter = ((milliseconds + 999) / 1000).ToString(System.Globalization.CultureInfo.InvariantCulture);
                await context.Response.WriteAsJsonAsync(new { code = 8, message = $"over the key's call rate; retry after {milliseconds} ms" });
                return;
            }

            await next(context);
        });
        app.UseSwagger(o => o.RouteTemplate = "openapi/{documentName}.json");
        return app;
    }
}
