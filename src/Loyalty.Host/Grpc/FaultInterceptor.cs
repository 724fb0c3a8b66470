using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Loyalty.Host.Grpc;

/// <summary>
/// The last line: an exception that escapes a handler (not a grain fault, which
/// <see cref="GrainCalls"/> already maps) is logged and answered as UNAVAILABLE instead of
/// gRPC's bare UNKNOWN. A retry is safe: every write is idempotent by its transaction id.
/// </summary>
public sealed partial class FaultInterceptor(ILogger<FaultInterceptor> logger) : Interceptor
{
    /// <inheritdoc />
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context);
        }
        catch (Exception e) when (e is not RpcException && e is not OperationCanceledException)
        {
            throw Fault(e, context);
        }
    }

    /// <inheritdoc />
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context);
        }
        catch (Exception e) when (e is not RpcException && e is not OperationCanceledException)
        {
            throw Fault(e, context);
        }
    }

    private RpcException Fault(Exception e, ServerCallContext context)
    {
        LogHandlerFailed(e, context.Method);
        return new RpcException(new Status(StatusCode.Unavailable, "the request could not be completed; retry (transaction ids make retries safe)"));
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Method} failed in the gateway")]
    private partial void LogHandlerFailed(Exception exception, string method);
}
