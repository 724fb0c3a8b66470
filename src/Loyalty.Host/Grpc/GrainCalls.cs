using Grpc.Core;

namespace Loyalty.Host.Grpc;

/// <summary>
/// Runs a grain call from a gRPC handler. Anything that escapes the grain is an engine fault
/// the caller can retry, so it becomes UNAVAILABLE, never a bare INTERNAL; the details go to
/// the log, not to the client, which is told only what it can know.
/// </summary>
internal static partial class GrainCalls
{
    public static async Task<T> RunAsync<T>(Func<Task<T>> call, ILogger logger, string operation)
    {
        try
        {
            return await call();
        }
        catch (RpcException)
        {
            throw;
        }
        catch (MemberUnavailableException)
        {
            // The member logged its failed load once; a client retrying is not logged again.
            throw new RpcException(new Status(StatusCode.Unavailable, $"{operation} could not be completed: the member cannot be loaded now; nothing was recorded, retry"));
        }
        catch (Exception e)
        {
            // Not "nothing was recorded": the grain may have failed, or its answer been lost (a
            // timeout, a silo gone), after its change was committed.
            LogGrainCallFailed(logger, e, operation);
            throw new RpcException(new Status(StatusCode.Unavailable, $"{operation} could not be completed: {UnknownOutcome}"));
        }
    }

    /// <summary>What a client is told when the engine failed while answering: the change may have been made.</summary>
    public const string UnknownOutcome =
        "the engine failed before answering, so whether it took effect is unknown; send it again (a change with the same id is never made twice) or read it back";

    /// <summary>Throws INVALID_ARGUMENT when <paramref name="error"/> is set.</summary>
    public static void Require(string? error)
    {
        if (error is not null)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, error));
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Operation} failed in the engine")]
    public static partial void LogGrainCallFailed(ILogger logger, Exception exception, string operation);
}
