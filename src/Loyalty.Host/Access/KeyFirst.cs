using System.Globalization;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Grpc.JsonTranscoding;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;

namespace Loyalty.Host.Access;

/// <summary>
/// Checks a call's key before its request body is read. grpc-dotnet and JSON transcoding parse a
/// unary call's message before any interceptor runs, so without this a caller with no key could
/// make the node inflate and parse a message of up to the size limit (a compressed one, or one of
/// millions of empty repeated fields, becomes hundreds of megabytes of objects) only to be refused
/// afterwards. A call refused here is answered as the interceptor would answer it
/// (UNAUTHENTICATED or PERMISSION_DENIED, HTTP 401 or 403 on HTTP/JSON) and counted in
/// <see cref="ClientFaults"/>; a call that passes carries its caller on to
/// <see cref="AccessInterceptor"/>, which checks the rest (the program a gRPC message names, the
/// store, quota). The key's scope, and on HTTP/JSON the program in the path, are checked here. It
/// also bounds an HTTP/JSON request's body, which grpc-dotnet's message limit does not cover, and
/// walks it before it is parsed (<see cref="JsonBodies"/>).
/// </summary>
public static class KeyFirst
{
    /// <summary>Where the caller found here waits for the interceptor (the call's <c>HttpContext.Items</c>).</summary>
    public const string CallerItem = "loyalty.key-first.caller";

    /// <summary>The largest HTTP/JSON request body: a program at its limits as JSON fits with room to spare.</summary>
    public const long JsonBodyBytesMax = 4 * 1024 * 1024;

    /// <summary>
    /// How many times its gRPC message limit a method's HTTP/JSON body may be: JSON spells out
    /// field names and numbers, and what JSON transcoding parses is bounded by the body alone.
    /// </summary>
    private const int JsonBodyPerMessageByte = 4;

    /// <summary>The largest HTTP/JSON body of <paramref name="method"/>: a purchase call's is 2 MiB.</summary>
    public static long JsonBodyBytesMaxOf(string method) =>
        Math.Min(JsonBodyBytesMax, (long)GatewayOptions.MessageBytesMaxOf(method) * JsonBodyPerMessageByte);

    /// <summary>Adds the check; it must run after routing and before the gRPC endpoints.</summary>
    public static IApplicationBuilder UseKeyFirst(this IApplicationBuilder app) =>
        app.Use(static (context, next) =>
            Check(context) is { } refusal ? Refuse(context, refusal.Code, refusal.Message)
            : IsJsonRoute(context.GetEndpoint()) && MethodOf(context.GetEndpoint()) is { } method ? JsonCallAsync(context, next, method)
            : next(context));

    /// <summary>
    /// An HTTP/JSON call that passed the checks above: its body read and walked before JSON
    /// transcoding parses it (see <see cref="JsonBodies"/>), and its error answers bounded.
    /// </summary>
    private static async Task JsonCallAsync(HttpContext context, RequestDelegate next, string method)
    {
        if (HasBody(context.Request) && await JsonBodies.ReadAndCheckAsync(context, method) is { } refused)
        {
            ClientFaultKind kind = refused.Code == StatusCode.ResourceExhausted ? ClientFaultKind.TooLarge : ClientFaultKind.Malformed;
            context.RequestServices.GetRequiredService<ClientFaults>().Record(kind, method, refused.Message);
            await Refuse(context, refused.Code, refused.Message);
            return;
        }

        await JsonBodies.RunBoundedAsync(context, next, method);
    }

    /// <summary>Whether the request may carry a body JSON transcoding reads: not on the methods that take none, nor one declared empty.</summary>
    private static bool HasBody(HttpRequest request) =>
        request.ContentLength != 0
        && !(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsDelete(request.Method) || HttpMethods.IsOptions(request.Method));

    /// <summary>
    /// The caller of the request's one <c>authorization</c> header, or null and why not (several
    /// headers are refused rather than one chosen).
    /// </summary>
    public static Caller? Authenticate(HttpRequest request, KeyRegistry keys, out string failure)
    {
        StringValues authorization = request.Headers.Authorization;
        if (authorization.Count > 1)
        {
            failure = "send one authorization header, not several";
            return null;
        }

        return keys.Authenticate(authorization.ToString(), out failure);
    }

    /// <summary>Why the call is refused here, or null when it may go on to its endpoint.</summary>
    private static (StatusCode Code, string Message)? Check(HttpContext context)
    {
        Endpoint? endpoint = context.GetEndpoint();
        string? method = MethodOf(endpoint);
        if (method is null || AccessPolicy.For(method) is { Anonymous: true })
        {
            // Not a call of the API (the dashboard, the report page, OpenAPI: each checks keys
            // itself), or a health probe, which needs none.
            return null;
        }

        ClientFaults faults = context.RequestServices.GetRequiredService<ClientFaults>();
        if (IsJsonRoute(endpoint))
        {
            // An HTTP/JSON route is JSON whatever its content type says ("application/grpc+json"
            // too): its body is bounded here, and a charset JSON transcoding cannot decode
            // (which it answers with UNKNOWN and a logged stack trace) is refused.
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } body)
            {
                body.MaxRequestBodySize = JsonBodyBytesMaxOf(method);
            }

            if (UnsupportedCharset(context.Request) is { } charset)
            {
                string refusal = $"the content type's charset '{Bounded.Echo(charset)}' is not supported: send JSON in UTF-8";
                faults.Record(ClientFaultKind.Malformed, method, refusal);
                return (StatusCode.InvalidArgument, refusal);
            }
        }

        if (Authenticate(context.Request, context.RequestServices.GetRequiredService<KeyRegistry>(), out string failure) is not { } caller)
        {
            faults.Record(ClientFaultKind.Unauthenticated, method, failure);
            return (StatusCode.Unauthenticated, failure);
        }

        // The key's scope and program, before the body is read: a key that may not make this call
        // does not get its body parsed either (an HTTP/JSON route names its program in the path,
        // which JSON transcoding puts in the request over whatever the body says).
        CallRule? rule = AccessPolicy.For(method);
        string? refused = rule is null || (rule.Scopes & caller.Key.Scope.AsSet()) == 0 ? $"a {caller.Key.Scope.ToStored()} key may not call {method}"
            : rule.ProgramScoped && IsJsonRoute(endpoint) && context.GetRouteValue("program_id") is string program ? caller.RefusesProgram(program)
            : null;
        if (refused is not null)
        {
            faults.Record(ClientFaultKind.PermissionDenied, method, refused);
            return (StatusCode.PermissionDenied, refused);
        }

        context.Items[CallerItem] = caller;
        return null;
    }

    /// <summary>The request's charset when it is one other than UTF-8 (JSON is UTF-8, RFC 8259); null when none is named, or UTF-8.</summary>
    private static string? UnsupportedCharset(HttpRequest request)
    {
        if (request.ContentType is not { } contentType)
        {
            return null;
        }

        if (!Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out Microsoft.Net.Http.Headers.MediaTypeHeaderValue? parsed))
        {
            return contentType;
        }

        string? charset = parsed.Charset.HasValue ? parsed.Charset.Value.Trim('"') : null;
        return charset is null || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase) || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase)
            ? null
            : charset;
    }

    /// <summary>Answers a refused call with <paramref name="code"/>, in gRPC's form or HTTP/JSON's.</summary>
    private static Task Refuse(HttpContext context, StatusCode code, string message)
    {
        HttpResponse response = context.Response;
        if (!IsJsonRoute(context.GetEndpoint()) && IsGrpc(context.Request))
        {
            // A trailers-only answer: the status in the headers, no message.
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "application/grpc";
            response.Headers["grpc-status"] = ((int)code).ToString(CultureInfo.InvariantCulture);
            response.Headers["grpc-message"] = Uri.EscapeDataString(message);
            return Task.CompletedTask;
        }

        // As JSON transcoding answers an RpcException: google.rpc.Status as JSON, with the HTTP
        // status of its code (a body too large, in bytes or in what it becomes, is 413).
        response.StatusCode = code switch
        {
            StatusCode.Unauthenticated => StatusCodes.Status401Unauthorized,
            StatusCode.PermissionDenied => StatusCodes.Status403Forbidden,
            StatusCode.ResourceExhausted => StatusCodes.Status413PayloadTooLarge,
            _ => StatusCodes.Status400BadRequest,
        };
        response.ContentType = "application/json";
        return response.Body.WriteAsync(StatusBody((int)code, message)).AsTask();
    }

    /// <summary>A <c>google.rpc.Status</c> as JSON transcoding writes one, of <paramref name="code"/> and <paramref name="message"/>.</summary>
    internal static byte[] StatusBody(int code, string message) =>
        System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["code"] = code,
            ["message"] = message,
            ["details"] = Array.Empty<object>(),
        }, StatusJson);

    /// <summary>
    /// The refusal's JSON, its message readable as written (quotes and angle brackets as they are,
    /// not escaped as Unicode): it is served as application/json, never inside HTML.
    /// </summary>
    private static readonly System.Text.Json.JsonSerializerOptions StatusJson =
        new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The API method an endpoint serves ("/loyalty.v1.Members/GetMember"), over gRPC or HTTP/JSON; null for other endpoints.</summary>
    private static string? MethodOf(Endpoint? endpoint)
    {
        if (endpoint is null)
        {
            return null;
        }

        if (endpoint.Metadata.GetMetadata<GrpcJsonTranscodingMetadata>() is { } json)
        {
            return "/" + json.MethodDescriptor.Service.FullName + "/" + json.MethodDescriptor.Name;
        }

        return endpoint.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method.FullName;
    }

    /// <summary>Whether the endpoint is an HTTP/JSON route (JSON transcoding), whatever the request's content type says.</summary>
    private static bool IsJsonRoute(Endpoint? endpoint) => endpoint?.Metadata.GetMetadata<GrpcJsonTranscodingMetadata>() is not null;

    private static bool IsGrpc(HttpRequest request) =>
        request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true;
}
