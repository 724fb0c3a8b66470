using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Host.Access;
using Loyalty.Storage;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>API keys and the audit trail over gRPC. The interceptor has already checked scope and program.</summary>
public sealed class AccessService(KeyRegistry keys, IAccessStore store, IGrainFactory grains, TimeProvider clock, ILogger<AccessService> logger) : V1.Access.AccessBase
{
    /// <summary>Store ids one POS key may be restricted to.</summary>
    public const int KeyStoresMax = 100;

    /// <summary>How far ahead a key's expiry may be set.</summary>
    public static readonly TimeSpan KeyLifetimeMax = TimeSpan.FromDays(3_650);

    /// <inheritdoc />
    public override async Task<V1.CreatedKey> CreateKey(V1.CreateKeyRequest request, ServerCallContext context)
    {
        Caller caller = Caller.Of(context);
        AccessScope scope = ToScope(request.Scope);
        string[] stores = [.. request.StoreIds.Distinct(StringComparer.Ordinal)];
        DateTimeOffset? expires = null;
        if (request.ExpiresAt is not null)
        {
            GrainCalls.Require(WireMapping.TryToTime(request.ExpiresAt, out DateTimeOffset at) ? null : "expires_at is out of range");
            expires = at;
        }

        GrainCalls.Require(CheckNewKey(request, scope, stores, expires) ?? CheckOutlives(caller.Key, expires));
        if (scope != AccessScope.Operator)
        {
            ProgramConfig? program = await GrainCalls.RunAsync(() => grains.GetGrain<IProgramGrain>(request.ProgramId).Get(), logger, "CreateKey");
            if (program is null)
            {
                throw new RpcException(new Status(StatusCode.NotFound, $"program '{request.ProgramId}' not found; create it first"));
            }
        }

        // Operators are not held to the day's allowance: a program's leaked admin key that used up
        // the day must not keep the operators from issuing the program's new keys.
        (KeyInsert outcome, AccessKey? key, string token) = await keys.CreateAsync(request.ProgramId, scope, stores, request.Name, expires, caller.Key.KeyId,
            heldToDayAllowance: caller.Key.Scope != AccessScope.Operator, context.CancellationToken);
        if (key is null)
        {
            throw outcome == KeyInsert.TooManyCreated
                ? new RpcException(new Status(StatusCode.ResourceExhausted,
                    $"at most {keys.KeysCreatedPerDayMax} keys created in 24 hours, revoked ones included; try again later"))
                : new RpcException(new Status(StatusCode.FailedPrecondition,
                    $"at most {(scope == AccessScope.Operator ? KeyRegistry.OperatorKeysMax : KeyRegistry.KeysPerProgramMax)} active keys; revoke one first"));
        }

        return new V1.CreatedKey { Key = ToMessage(key), Secret = token };
    }

    /// <inheritdoc />
    public override Task<V1.ListKeysResponse> ListKeys(V1.ListKeysRequest request, ServerCallContext context)
    {
        var response = new V1.ListKeysResponse();
        response.Keys.AddRange(keys.List(request.ProgramId, request.IncludeRevoked).Select(ToMessage));
        return Task.FromResult(response);
    }

    /// <inheritdoc />
    public override async Task<V1.ApiKey> RevokeKey(V1.RevokeKeyRequest request, ServerCallContext context)
    {
        AccessKey? key = keys.Find(request.KeyId);
        if (key is null || key.ProgramId != request.ProgramId)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"no key '{Bounded.Echo(request.KeyId)}' in this program"));
        }

        (AccessKey? revoked, bool lastOperatorKey) = await keys.RevokeAsync(request.KeyId, context.CancellationToken);
        if (revoked is null)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"no key '{Bounded.Echo(request.KeyId)}'"));
        }

        if (lastOperatorKey)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                "this is the last operator key that works for at least another hour; create another before revoking it"));
        }

        return ToMessage(revoked);
    }

    /// <inheritdoc />
    public override Task<V1.ApiKey> WhoAmI(V1.WhoAmIRequest request, ServerCallContext context) =>
        Task.FromResult(ToMessage(Caller.Of(context).Key));

    /// <inheritdoc />
    public override async Task<V1.ListAuditResponse> ListAudit(V1.ListAuditRequest request, ServerCallContext context)
    {
        if (request.PageSize is < 0 or > Limits.LedgerPageSizeMax)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"page_size must be 0..{Limits.LedgerPageSizeMax}"));
        }

        long before = long.MaxValue;
        if (request.PageToken.Length > 0 && (!long.TryParse(request.PageToken, NumberStyles.None, CultureInfo.InvariantCulture, out before) || before <= 0))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "page_token is not one this call returned"));
        }

        int size = request.PageSize == 0 ? Limits.LedgerPageSizeDefault : request.PageSize;
        IReadOnlyList<AuditRow> rows = await store.ReadAuditAsync(request.ProgramId, before, size, context.CancellationToken);
        var response = new V1.ListAuditResponse
        {
            NextPageToken = rows.Count == size ? rows[^1].Id.ToString(CultureInfo.InvariantCulture) : "",
        };
        response.Records.AddRange(rows.Select(r => new V1.AuditRecord
        {
            Id = r.Id,
            At = Timestamp.FromDateTimeOffset(r.At),
            KeyId = r.KeyId,
            ProgramId = r.ProgramId,
            Method = r.Method,
            Target = r.Target,
            Outcome = r.Outcome,
        }));
        return response;
    }

    /// <summary>Why a new key may not be made as asked, or null.</summary>
    private string? CheckNewKey(V1.CreateKeyRequest request, AccessScope scope, string[] stores, DateTimeOffset? expires)
    {
        if (scope == AccessScope.Operator ? request.ProgramId.Length != 0 : LoyaltyIds.Check(request.ProgramId, "program_id") is not null)
        {
            return scope == AccessScope.Operator ? "operator keys belong to no program; leave program_id empty" : LoyaltyIds.Check(request.ProgramId, "program_id");
        }

        if (FreeText.Check(request.Name, "name", Limits.NameLengthMax) is { } nameError)
        {
            return nameError;
        }

        if (stores.Length > 0 && scope != AccessScope.Pos)
        {
            return "store_ids restrict POS keys only";
        }

        if (stores.Length > KeyStoresMax)
        {
            return $"store_ids holds {stores.Length} stores; at most {KeyStoresMax}";
        }

        if (stores.Select(s => LoyaltyIds.Check(s, "store_ids")).FirstOrDefault(e => e is not null) is { } badStore)
        {
            return badStore;
        }

        DateTimeOffset now = clock.GetUtcNow();
        return expires is { } at && (at <= now || at > now + KeyLifetimeMax)
            ? $"expires_at must lie in the future, at most {KeyLifetimeMax.TotalDays:0} days ahead"
            : null;
    }

    /// <summary>
    /// Why a key that expires may not make this one: a key given for a while (a contractor's)
    /// must not make one that outlives it, or its access would last for good.
    /// </summary>
    private static string? CheckOutlives(AccessKey creator, DateTimeOffset? expires) =>
        creator.Row.ExpiresAt is { } creatorExpires && (expires is null || expires > creatorExpires)
            ? $"the calling key expires at {creatorExpires:u}; a key it makes must have an expires_at no later"
            : null;

    private static AccessScope ToScope(V1.KeyScope scope) => scope switch
    {
        V1.KeyScope.Operator => AccessScope.Operator,
        V1.KeyScope.Admin => AccessScope.Admin,
        V1.KeyScope.Pos => AccessScope.Pos,
        V1.KeyScope.Support => AccessScope.Support,
        V1.KeyScope.Reader => AccessScope.Reader,
        _ => throw new RpcException(new Status(StatusCode.InvalidArgument, "scope is required: OPERATOR, ADMIN, POS, SUPPORT or READER")),
    };

    private static V1.ApiKey ToMessage(AccessKey key)
    {
        var message = new V1.ApiKey
        {
            KeyId = key.KeyId,
            ProgramId = key.ProgramId,
            Scope = (V1.KeyScope)(int)key.Scope,
            Name = key.Row.Name,
            CreatedAt = Timestamp.FromDateTimeOffset(key.Row.CreatedAt),
            CreatedBy = key.Row.CreatedBy,
            ExpiresAt = key.Row.ExpiresAt is { } expires ? Timestamp.FromDateTimeOffset(expires) : null,
            RevokedAt = key.Row.RevokedAt is { } revoked ? Timestamp.FromDateTimeOffset(revoked) : null,
        };
        message.StoreIds.AddRange(key.StoreIds.Order(StringComparer.Ordinal));
        return message;
    }
}
