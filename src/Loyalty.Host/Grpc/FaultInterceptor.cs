using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Loyalty.Host.Grpc;

/// <summary>
/// The last line: an exception that escapes a handler (not a grain fault, which
/// <see cref="GrainCalls"/> already maps) is logged and answered as UNAVAILABLE instead of
/// gRPC's bare UNKNOWN. A retry is safe: every write is idempotent by its transaction id.
/// A call the client itself ended is not an engine fault: it is counted in <see cref="ClientFaults"/>.
/// A broken request stream is INVALID_ARGUMENT (see <see cref="ProtocolErrors"/> for unary calls).
/// Refusals longer than <see cref="Bounded.DetailLengthMax"/> are cut.
/// </summary>
public sealed partial class FaultInterceptor(ClientFaults faults, ILogger<FaultInterceptor> logger) : Interceptor
{
    /// <inheritdoc />
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context);
        }
        catch (Exception e) when (Answer(e, context) is { } answer)
        {
            throw answer;
        }
    }

    /// <inheritdoc />
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context);
        }
        catch (Exception e) when (Answer(e, context) is { } answer)
        {
            throw answer;
        }
    }

    /// <inheritdoc />
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context);
        }
        catch (Exception e) when (Answer(e, context) is { } answer)
        {
            throw answer;
        }
    }

    /// <summary>
    /// What the client gets instead of <paramref name="e"/>, or null when <paramref name="e"/>
    /// itself is the answer (a refusal, a cancellation).
    /// </summary>
    private RpcException? Answer(Exception e, ServerCallContext context)
    {
        switch (e)
        {
            case OperationCanceledException:
                return null;
            case RpcException { StatusCode: StatusCode.ResourceExhausted } tooLarge when tooLarge.Status.Detail.StartsWith(ProtocolErrors.MessageTooLargePrefix, StringComparison.Ordinal):
                // A streamed message over the size limit, as grpc-dotnet's reader refused it: counted, not logged as a failure.
                faults.Record(ClientFaultKind.TooLarge, context.Method, tooLarge.Status.Detail);
                return null;
            case RpcException { StatusCode: StatusCode.Internal } broken:
                return Malformed(broken, context);
            case RpcException refusal:
                return refusal.Status.Detail.Length > Bounded.DetailLengthMax ? Cut(refusal) : null;
            default:
                return Fault(e, context);
        }
    }

    /// <summary>
    /// A request stream whose framing is broken (a message cut short, compressed without an
    /// encoding): grpc-dotnet's reader says INTERNAL, but the fault is the client's and a retry of
    /// the same bytes cannot succeed, so it is INVALID_ARGUMENT. The engine itself never raises INTERNAL.
    /// </summary>
    private RpcException Malformed(RpcException e, ServerCallContext context)
    {
        faults.Record(ClientFaultKind.Malformed, context.Method, e.Status.Detail);
        return new RpcException(new Status(StatusCode.InvalidArgument, ProtocolErrors.InvalidFramePrefix + Bounded.Echo(e.Status.Detail)));
    }

    /// <summary>The same refusal with its message cut: no answer echoes a huge field back.</summary>
    private static RpcException Cut(RpcException e) => new(new Status(e.StatusCode, Bounded.Detail(e.Status.Detail)), e.Trailers);

    private RpcException Fault(Exception e, ServerCallContext context)
    {
        if (context.CancellationToken.IsCancellationRequested)
        {
            // The client reset or abandoned the call (a stream read then fails with an I/O error):
            // its fault, counted and logged without a stack trace, not an engine failure.
            faults.Record(ClientFaultKind.Reset, context.Method, e.GetType().Name);
            return new RpcException(new Status(StatusCode.Cancelled, "the client ended the call"));
        }

        LogHandlerFailed(e, context.Method);
        return new RpcException(new Status(StatusCode.Unavailable, "the request could not be completed; retry (transaction ids make retries safe)"));
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Method} failed in the gateway")]
    private partial void LogHandlerFailed(Exception exception, string method);
}
