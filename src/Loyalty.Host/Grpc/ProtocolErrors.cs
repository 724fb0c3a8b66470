using System.Globalization;
using Microsoft.Extensions.Primitives;

namespace Loyalty.Host.Grpc;

/// <summary>
/// Unary calls whose request body is not a well-formed gRPC message (cut short, followed by more
/// data, flagged compressed without an encoding) are refused by grpc-dotnet before any
/// interceptor runs, with INTERNAL. Such an answer is a trailers-only response, so its status is
/// still in the headers when they are about to be sent; this middleware turns it into
/// INVALID_ARGUMENT there: the fault is the client's, and sending the same bytes again cannot help.
/// The engine itself never answers INTERNAL, so nothing else is touched. Its refusal of an unknown
/// <c>grpc-encoding</c> (UNIMPLEMENTED) keeps its status and quotes the header bounded.
/// </summary>
public static class ProtocolErrors
{
    /// <summary>How the refusal of a broken request begins.</summary>
    public const string InvalidFramePrefix = "the request is not a well-formed gRPC message: ";

    /// <summary>How grpc-dotnet's refusal of a message over the size limit begins (RESOURCE_EXHAUSTED).</summary>
    public const string MessageTooLargePrefix = "Received message exceeds";

    private const string InternalCode = "13";

    private const string ResourceExhaustedCode = "8";

    private const string UnimplementedCode = "12";

    /// <summary>How grpc-dotnet's refusal of a <c>grpc-encoding</c> it does not know begins (UNIMPLEMENTED).</summary>
    private const string UnsupportedEncodingPrefix = "Unsupported grpc-encoding value";

    /// <summary>Adds the middleware; it must run before the gRPC endpoints.</summary>
    public static IApplicationBuilder UseGrpcProtocolErrorsAsInvalidArgument(this IApplicationBuilder app) =>
        app.Use(static (context, next) =>
        {
            if (context.Request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true)
            {
                context.Response.OnStarting(static state => Rewrite((HttpContext)state), context);
            }

            return next(context);
        });

    private static Task Rewrite(HttpContext context)
    {
        IHeaderDictionary headers = context.Response.Headers;
        if (headers.TryGetValue("grpc-status", out StringValues exhausted) && exhausted == ResourceExhaustedCode
            && headers["grpc-message"].ToString().StartsWith(MessageTooLargePrefix, StringComparison.Ordinal))
        {
            // A message over the size limit (compressed or inflated); grpc-dotnet's status stands, and it is counted.
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.TooLarge, context.Request.Path, headers["grpc-message"].ToString());
        }

        if (headers.TryGetValue("grpc-status", out StringValues unimplemented) && unimplemented == UnimplementedCode
            && headers["grpc-message"].ToString().StartsWith(UnsupportedEncodingPrefix, StringComparison.Ordinal))
        {
            // grpc-dotnet quotes the header whole (up to Kestrel's header limit, escaped three times
            // over): the status stands, the quote is bounded, and the fault is counted.
            string encoding = context.Request.Headers["grpc-encoding"].ToString();
            string message = $"grpc-encoding '{Bounded.Echo(encoding)}' is not supported: send identity or gzip";
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.Malformed, context.Request.Path, message);
            headers["grpc-message"] = Uri.EscapeDataString(message);
        }

        if (headers.TryGetValue("grpc-status", out StringValues status) && status == InternalCode)
        {
            string detail = Uri.UnescapeDataString(headers["grpc-message"].ToString());
            context.RequestServices.GetRequiredService<ClientFaults>().Record(ClientFaultKind.Malformed, context.Request.Path, detail);
            headers["grpc-status"] = ((int)global::Grpc.Core.StatusCode.InvalidArgument).ToString(CultureInfo.InvariantCulture);
            headers["grpc-message"] = Uri.EscapeDataString(InvalidFramePrefix + Bounded.Echo(detail));
        }

        return Task.CompletedTask;
    }
}
