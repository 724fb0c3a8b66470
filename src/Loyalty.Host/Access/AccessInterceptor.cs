using System.Globalization;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Loyalty.Storage;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Access;

/// <summary>
/// The front door of every call: authenticates the key, checks the call against
/// <see cref="AccessPolicy"/> (scope, program, store), takes the call from the key's quota, and
/// records support and admin calls in the audit trail. A refused call reaches no service, so it
/// writes nothing. Streams are checked here once; their messages are checked by the service.
/// </summary>
public sealed partial class AccessInterceptor(KeyRegistry keys, AnonymousStreams anonymous, IAccessStore audit, ClientFaults faults, TimeProvider clock, ILogger<AccessInterceptor> logger) : Interceptor
{

    /// <summary>When a key at its cap of open streams is told to try again (a stream's end cannot be foreseen).</summary>
    private static readonly TimeSpan StreamRetryAfter = TimeSpan.FromSeconds(1);

    /// <inheritdoc />
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        if (Admit(context) is not (Caller caller, CallRule rule))
        {
            return await continuation(request, context);
        }

        if (rule.ProgramScoped)
        {
            CheckScoped(caller, request, context);
        }

        bool allowed = rule.Kind == CallKind.Purchase
            ? caller.Quota.TryTakePurchase(out TimeSpan retryAfter)
            : caller.Quota.TryTakeUnary(out retryAfter);
        if (!allowed)
        {
            throw OverQuota(context, retryAfter, "the key's call rate");
        }

        caller.AttachTo(context);
        return rule.Audited
            ? await AuditedAsync(caller, request, context, continuation)
            : await continuation(request, context);
    }

    /// <inheritdoc />
    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (Admit(context) is not (Caller caller, _))
        {
            await continuation(requestStream, responseStream, context);
            return;
        }

        // The purchase streams check and count each message themselves; any other duplex stream
        // (server reflection) is read through a reader that does it for them: each request costs
        // a unary call, and a key revoked meanwhile ends the stream.
        IAsyncStreamReader<TRequest> reader = context.Method.StartsWith("/loyalty.v1.Purchases/", StringComparison.Ordinal)
            ? requestStream
            : new MeteredReader<TRequest>(requestStream, caller, keys, faults, context.Method, retryAfter => OverQuota(context, retryAfter, "the key's call rate"));
        await StreamAsync(caller, context, () => continuation(reader, responseStream, context));
    }

    /// <summary>Reads a stream's requests, each one checked against the key and taken from its quota of unary calls.</summary>
    private sealed class MeteredReader<T>(IAsyncStreamReader<T> inner, Caller caller, KeyRegistry keys, ClientFaults faults, string method, Func<TimeSpan, RpcException> overQuota)
        : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!await inner.MoveNext(cancellationToken))
            {
                return false;
            }

            keys.ThrowIfNoLongerUsable(caller, faults, method);
            return caller.Quota.TryTakeUnary(out TimeSpan retryAfter) ? true : throw overQuota(retryAfter);
        }
    }

    /// <inheritdoc />
    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        // A call of this kind added later (a change feed) is behind keys from the start; the health watch is not.
        if (Admit(context) is not (Caller caller, CallRule rule))
        {
            if (!anonymous.TryOpen())
            {
                throw OverQuota(context, StreamRetryAfter, $"the node's {AnonymousStreams.OpenMax} streams open without a key (health watches)");
            }

            try
            {
                await continuation(request, responseStream, context);
            }
            finally
            {
                anonymous.Close();
            }

            return;
        }

        if (rule.ProgramScoped)
        {
            CheckScoped(caller, request, context);
        }

        // What such a stream sends (events) is checked against the key at each message, so a key
        // revoked or expired while its stream is open receives nothing more.
        var checkedStream = new KeyCheckedWriter<TResponse>(responseStream, keys, caller, faults, context.Method);
        await StreamAsync(caller, context, () => continuation(request, checkedStream, context));
    }

    /// <inheritdoc />
    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (Admit(context) is not (Caller caller, _))
        {
            return await continuation(requestStream, context);
        }

        TResponse? response = null;
        await StreamAsync(caller, context, async () => response = await continuation(requestStream, context));
        return response!;
    }

    /// <summary>Runs a stream within the key's allowance of open streams.</summary>
    private async Task StreamAsync(Caller caller, ServerCallContext context, Func<Task> run)
    {
        // Opening a stream costs a call: it reads the database (where an event stream starts), so
        // a loop of opens and cancels is held to the key's call rate like any other reads.
        if (!caller.Quota.TryTakeUnary(out TimeSpan retryAfter))
        {
            throw OverQuota(context, retryAfter, "the key's call rate");
        }

        if (!caller.Quota.TryOpenStream())
        {
            throw OverQuota(context, StreamRetryAfter, "the streams the key may hold open");
        }

        try
        {
            caller.AttachTo(context);
            await run();
        }
        finally
        {
            caller.Quota.CloseStream();
        }
    }

    /// <summary>
    /// Authenticates the call and checks its method against the key's scope; null for a call that
    /// needs no key (the health probes). Refusals are thrown.
    /// </summary>
    private (Caller Caller, CallRule Rule)? Admit(ServerCallContext context)
    {
        // Noted for the HTTP/JSON answer's bounding (JsonBodies): a refusal of a call seen here is
        // counted here, or is the engine's answer, not a body JSON transcoding could not convert.
        if (context.GetHttpContext().Items.TryGetValue(JsonBodies.SeenItem, out object? seen) && seen is System.Runtime.CompilerServices.StrongBox<bool> box)
        {
            box.Value = true;
        }

        CallRule? rule = AccessPolicy.For(context.Method);
        if (rule is { Anonymous: true })
        {
            return null;
        }

        // The key was checked before the request was read (KeyFirst). The headers are read
        // from the HTTP request, not through context.RequestHeaders: building those parses every
        // header as gRPC metadata and throws on one that is not (a "-bin" value that is not
        // base64), which would answer UNKNOWN with an error logged, before any key is seen.
        HttpContext http = context.GetHttpContext();
        Caller? caller = http.Items.TryGetValue(KeyFirst.CallerItem, out object? checkedFirst) ? checkedFirst as Caller : null;
        string failure = "";
        if (caller is not null && keys.NoLongerUsable(caller.Key.KeyId) is { } gone)
        {
            // Revoked or expired while the request's body was on its way (a slow one can take long).
            caller = null;
            failure = gone;
        }
        else
        {
            caller ??= KeyFirst.Authenticate(http.Request, keys, out failure);
        }

        if (caller is null)
        {
            throw Refuse(ClientFaultKind.Unauthenticated, StatusCode.Unauthenticated, context, failure);
        }

        if (rule is null || (rule.Scopes & caller.Key.Scope.AsSet()) == 0)
        {
            throw Refuse(ClientFaultKind.PermissionDenied, StatusCode.PermissionDenied, context,
                $"a {caller.Key.Scope.ToStored()} key may not call {context.Method}");
        }

        return (caller, rule);
    }

    /// <summary>Checks the request's program and, for a POS key restricted to stores, its store.</summary>
    private void CheckScoped(Caller caller, object? request, ServerCallContext context)
    {
        if (request is not V1.IProgramScoped scoped)
        {
            // A program-scoped call whose request names no program: only operators may make it.
            if (caller.Key.Scope != AccessScope.Operator)
            {
                throw Refuse(ClientFaultKind.PermissionDenied, StatusCode.PermissionDenied, context, "this call needs an operator key");
            }

            return;
        }

        string? refusal = caller.RefusesProgram(scoped.ProgramId)
            ?? (request is V1.IStoreScoped store ? caller.RefusesStore(store.StoreId) : null);
        if (refusal is not null)
        {
            throw Refuse(ClientFaultKind.PermissionDenied, StatusCode.PermissionDenied, context, refusal);
        }
    }

    /// <summary>Runs a call between two audit writes: who started it, then how it ended.</summary>
    private async Task<TResponse> AuditedAsync<TRequest, TResponse>(Caller caller, TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
        where TRequest : class
        where TResponse : class
    {
        // Written before the request is validated, so whatever the client sent is cleaned first.
        string program = FreeText.Clean((request as V1.IProgramScoped)?.ProgramId);
        long id;
        try
        {
            id = await audit.AppendAuditAsync(
                new AuditRow(0, program, clock.GetUtcNow(), caller.Key.KeyId, context.Method, FreeText.Clean(Target(request)), IAccessStore.OutcomeStarted),
                context.CancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // No change without its record: the call is not made.
            throw new RpcException(new Status(StatusCode.Unavailable, "the audit trail could not be written; nothing was done, retry"));
        }

        string outcome = "UNAVAILABLE";
        try
        {
            TResponse response = await continuation(request, context);
            outcome = "OK";
            return response;
        }
        catch (RpcException e)
        {
            outcome = Grpc.WireMapping.StatusName(e.StatusCode);
            throw;
        }
        catch (OperationCanceledException)
        {
            outcome = "CANCELLED";
            throw;
        }
        finally
        {
            try
            {
                // Not the call's token: the outcome is recorded even when the client has gone.
                await audit.CompleteAuditAsync(id, outcome, CancellationToken.None);
            }
            catch (Exception e)
            {
                // The record stays STARTED; the call's own answer is not replaced by this failure.
                LogAuditCompletionFailed(id, outcome, e.GetType().Name, e.Message);
            }
        }
    }

    /// <summary>What an audited call was about, bounded.</summary>
    private static string Target(object? request) => (request switch
    {
        V1.MergeMembersRequest merge => merge.SurvivorId + "<-" + merge.DuplicateId,
        V1.IMemberScoped member => member.MemberId,
        V1.RevokeKeyRequest revoke => revoke.KeyId,
        V1.CreateKeyRequest create => create.Scope.ToString(),
        _ => "",
    }) ?? "";

    private RpcException OverQuota(ServerCallContext context, TimeSpan retryAfter, string limit)
    {
        long milliseconds = TokenBucket.WholeMilliseconds(retryAfter);
        faults.Record(ClientFaultKind.QuotaExceeded, context.Method, limit);
        // The same advice as an HTTP header, for HTTP/JSON callers (429 with Retry-After); not on a
        // stream that has answered already (its headers are gone: the trailer carries it).
        HttpResponse response = context.GetHttpContext().Response;
        if (!response.HasStarted)
        {
            response.Headers.RetryAfter = ((milliseconds + 999) / 1000).ToString(CultureInfo.InvariantCulture);
        }

        var trailers = new Metadata { { Loyalty.Api.ApiKeyCalls.RetryAfterTrailer, milliseconds.ToString(CultureInfo.InvariantCulture) } };
        return new RpcException(new Status(StatusCode.ResourceExhausted, $"over {limit}; retry after {milliseconds} ms"), trailers);
    }

    private RpcException Refuse(ClientFaultKind kind, StatusCode code, ServerCallContext context, string message)
    {
        faults.Record(kind, context.Method, message);
        return new RpcException(new Status(code, message));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Audit record {AuditId} stays STARTED: recording outcome {Outcome} failed ({Error}: {Message})")]
    private partial void LogAuditCompletionFailed(long auditId, string outcome, string error, string message);
}
