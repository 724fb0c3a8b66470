using Loyalty.Api;
using System.Collections.Concurrent;
using Loyalty.Storage;
using Microsoft.Extensions.Options;

namespace Loyalty.Host.Access;

/// <summary>
/// Every key of the engine, held in memory and refreshed from the database every
/// <see cref="AuthOptions.RefreshIntervalMs"/>: a call is authenticated without a database round
/// trip, a flood of made-up keys costs no query, and a key created or revoked on any node holds on
/// every node within one refresh. Keys are few (at most <see cref="KeysPerProgramMax"/> active per
/// program, <see cref="AuthOptions.KeysCreatedPerDayMax"/> made a day by its admins, and ended ones
/// forgotten after <see cref="AuthOptions.EndedKeysKeptDays"/>), so holding them all is cheap.
/// </summary>
public sealed partial class KeyRegistry(
    IAccessStore store,
    IOptions<AuthOptions> options,
    IOptions<QuotaOptions> quotas,
    TimeProvider clock,
    ILogger<KeyRegistry> logger)
{
    /// <summary>Active (not revoked, not expired) keys one program may have.</summary>
    public const int KeysPerProgramMax = 1_000;

    /// <summary>Active operator keys.</summary>
    public const int OperatorKeysMax = 100;

    /// <summary>The bounds <see cref="AuthOptions.RefreshIntervalMs"/> is kept within.</summary>
    private const int RefreshIntervalMsMin = 50, RefreshIntervalMsMax = 60_000;

    /// <summary>Characters of an authorization header looked at; longer values are refused unread.</summary>
    private const int AuthorizationLengthMax = 7 + KeyTokens.TokenLength;

    /// <summary>How often a node forgets the keys that ended longer ago than they are kept.</summary>
    private static readonly TimeSpan SweepInterval = TimeSpan.FromHours(1);

    /// <summary>How far back each refresh looks before the previous one, for changes committed late.</summary>
    private static readonly TimeSpan RefreshOverlap = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<string, AccessKey> _keys = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, KeyQuota> _quotas = new(StringComparer.Ordinal);
    private DateTimeOffset? _refreshedAt;

    /// <summary>The refresh interval.</summary>
    public TimeSpan RefreshInterval => TimeSpan.FromMilliseconds(Math.Clamp(options.Value.RefreshIntervalMs, RefreshIntervalMsMin, RefreshIntervalMsMax));

    /// <summary>
    /// The caller of an <c>authorization</c> value, or null and why not (a message that reveals
    /// nothing about which keys exist).
    /// </summary>
    public Caller? Authenticate(string? authorization, out string failure)
    {
        if (string.IsNullOrEmpty(authorization))
        {
            failure = "send the key as 'authorization: Bearer <key>'";
            return null;
        }

        ReadOnlySpan<char> value = authorization.AsSpan().Trim();
        if (value.Length > AuthorizationLengthMax || !value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
            || !KeyTokens.TryParse(value[7..].Trim(), out string keyId, out string secret)
            || !_keys.TryGetValue(keyId, out AccessKey? key) || !key.HasSecret(secret))
        {
            failure = "the key is not valid";
            return null;
        }

        if (key.Unusable(clock.GetUtcNow()) is { } why)
        {
            failure = why;
            return null;
        }

        failure = "";
        KeyQuota quota = _quotas.GetOrAdd(keyId, static (_, k) => new KeyQuota(k.Limits, k.Clock), (Limits: quotas.Value.For(key.Scope), Clock: clock));
        return new Caller(key, quota);
    }

    /// <summary>Why a key authenticated earlier (an open stream's) no longer works, or null while it does.</summary>
    public string? NoLongerUsable(string keyId) =>
        _keys.TryGetValue(keyId, out AccessKey? key) ? key.Unusable(clock.GetUtcNow()) : "the key was removed";

    /// <summary>
    /// Ends an open stream whose key was revoked, expired or removed since it opened: counted as a
    /// client fault and thrown as UNAUTHENTICATED saying why. Nothing when the key still works.
    /// </summary>
    public void ThrowIfNoLongerUsable(Caller caller, ClientFaults faults, string method)
    {
        if (NoLongerUsable(caller.Key.KeyId) is { } why)
        {
            faults.Record(ClientFaultKind.Unauthenticated, method, why);
            throw new global::Grpc.Core.RpcException(new global::Grpc.Core.Status(global::Grpc.Core.StatusCode.Unauthenticated, why));
        }
    }

    /// <summary>The key with this id, or null.</summary>
    public AccessKey? Find(string keyId) => _keys.GetValueOrDefault(keyId);

    /// <summary>A program's keys (operator keys for an empty id), oldest first.</summary>
    public IReadOnlyList<AccessKey> List(string programId, bool includeRevoked) =>
        [.. _keys.Values
            .Where(k => k.ProgramId == programId && (includeRevoked || k.Row.RevokedAt is null))
            .OrderBy(k => k.Row.CreatedAt).ThenBy(k => k.KeyId, StringComparer.Ordinal)];

    /// <summary>Keys a program's admins may create for it in any 24 hours (see <see cref="AuthOptions.KeysCreatedPerDayMax"/>).</summary>
    public int KeysCreatedPerDayMax => Math.Max(1, options.Value.KeysCreatedPerDayMax);

    /// <summary>
    /// Stores a new key and returns it with its token (the only time the secret exists outside the
    /// caller), or the bound that refused it with no key. The store checks the bounds in the same
    /// step as the insert, against every node's keys: at most <see cref="OperatorKeysMax"/> or
    /// <see cref="KeysPerProgramMax"/> working, and, when <paramref name="heldToDayAllowance"/>,
    /// <see cref="KeysCreatedPerDayMax"/> created in the last 24 hours; when
    /// <paramref name="onlyIfNoneWorks"/>, none of the program's keys working.
    /// </summary>
    public async Task<(KeyInsert Outcome, AccessKey? Key, string Token)> CreateAsync(string programId, AccessScope scope, IReadOnlyCollection<string> storeIds,
        string name, DateTimeOffset? expiresAt, string createdBy, bool heldToDayAllowance, CancellationToken cancellationToken, bool onlyIfNoneWorks = false)
    {
        while (true)
        {
            (string keyId, string secret, string token) = KeyTokens.New();
            DateTimeOffset now = Microseconds(clock.GetUtcNow());
            var row = new AccessKeyRow(keyId, programId, scope.ToStored(), string.Join(',', storeIds), name, KeyTokens.Hash(secret),
                now, createdBy, expiresAt is { } at ? Microseconds(at) : null, RevokedAt: null);
            var allowance = new KeyAllowance(onlyIfNoneWorks ? 1 : programId.Length == 0 ? OperatorKeysMax : KeysPerProgramMax,
                heldToDayAllowance ? KeysCreatedPerDayMax : int.MaxValue, now.AddDays(-1), now);
            switch (await store.InsertKeyAsync(row, allowance, cancellationToken))
            {
                case KeyInsert.Inserted:
                    AccessKey key = AccessKey.From(row);
                    _keys[keyId] = key;
                    return (KeyInsert.Inserted, key, token);
                case KeyInsert.IdTaken:
                    // 64 random bits of id: a collision is astronomically rare, and then a new id is drawn.
                    continue;
                case var refused:
                    return (refused, null, "");
            }
        }
    }

    /// <summary>
    /// Revokes a key at once on this node (the others follow within one refresh). Null when there
    /// is no such key; the key unchanged and true when it is the last working operator key.
    /// </summary>
    public async Task<(AccessKey? Key, bool LastOperatorKey)> RevokeAsync(string keyId, CancellationToken cancellationToken)
    {
        KeyRevocation revocation = await store.RevokeKeyAsync(keyId, Microseconds(clock.GetUtcNow()), cancellationToken);
        if (revocation.Key is null)
        {
            return (null, false);
        }

        AccessKey key = AccessKey.From(revocation.Key);
        if (!revocation.LastOperatorKey)
        {
            _keys[keyId] = key;
            _quotas.TryRemove(keyId, out _);
        }

        return (key, revocation.LastOperatorKey);
    }

    /// <summary>How long a revoked or expired key is kept (see <see cref="AuthOptions.EndedKeysKeptDays"/>).</summary>
    public TimeSpan EndedKeysKept => TimeSpan.FromDays(Math.Max(1, options.Value.EndedKeysKeptDays));

    /// <summary>
    /// Forgets the keys that ended (revoked or expired) longer ago than <see cref="EndedKeysKept"/>,
    /// then clears their rows' names and store ids in the database (every node does; the second
    /// finds nothing to clear). A node forgets by its own clock, whether or not the database
    /// answers: the clearing is no change the others would read.
    /// </summary>
    public async Task ForgetEndedKeysAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset before = ForgetEndedKeys();
        await store.ClearKeysEndedBeforeAsync(before, cancellationToken);
    }

    /// <summary>Forgets, in this node's memory only, the keys that ended longer ago than they are kept; returns the cut-off.</summary>
    private DateTimeOffset ForgetEndedKeys()
    {
        DateTimeOffset before = clock.GetUtcNow() - EndedKeysKept;
        foreach (AccessKey key in _keys.Values)
        {
            if (key.Row.EndedBefore(before))
            {
                _keys.TryRemove(key.KeyId, out _);
                _quotas.TryRemove(key.KeyId, out _);
            }
        }

        return before;
    }

    /// <summary>Reads the keys changed since the previous refresh (all of them the first time).</summary>
    public async Task RefreshAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset? since = _refreshedAt - RefreshOverlap;
        (IReadOnlyList<AccessKeyRow> rows, DateTimeOffset now) = await store.ReadKeysChangedSinceAsync(since, cancellationToken);
        DateTimeOffset forgetBefore = clock.GetUtcNow() - EndedKeysKept;
        foreach (AccessKeyRow row in rows)
        {
            if (row.EndedBefore(forgetBefore))
            {
                // Ended longer ago than keys are kept (the first read holds every row ever stored).
                _keys.TryRemove(row.KeyId, out _);
                continue;
            }

            AccessKey read;
            try
            {
                read = AccessKey.From(row);
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                // One corrupt row must not stop every later key (and revocation) from arriving.
                LogBadKeyRow(row.KeyId, e.Message);
                continue;
            }

            // Revocation is final: a row read before a revocation made here must not undo it.
            _keys.AddOrUpdate(row.KeyId, read, (_, held) => held.Row.RevokedAt is not null && read.Row.RevokedAt is null ? held : read);
            if (row.RevokedAt is not null)
            {
                _quotas.TryRemove(row.KeyId, out _);
            }
        }

        _refreshedAt = now;
    }

    /// <summary>Refreshes until <paramref name="cancellationToken"/> is cancelled; a failed refresh is logged and tried again.</summary>
    public async Task RunRefreshesAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(RefreshInterval, clock);
        DateTimeOffset nextSweep = clock.GetUtcNow();
        while (await timer.WaitForNextTickAsync(cancellationToken))
        {
            try
            {
                await RefreshAsync(cancellationToken);
                if (clock.GetUtcNow() >= nextSweep)
                {
                    // Hourly, failed or not: what ended before the kept days is no longer read or answered.
                    nextSweep = clock.GetUtcNow() + SweepInterval;
                    await ForgetEndedKeysAsync(cancellationToken);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogRefreshFailed(e.GetType().Name, e.Message);
            }
        }
    }

    /// <summary>A time cut to what both databases keep, so that a key reads the same before and after a refresh.</summary>
    private static DateTimeOffset Microseconds(DateTimeOffset at) => new(at.UtcTicks - (at.UtcTicks % 10), TimeSpan.Zero);

    [LoggerMessage(Level = LogLevel.Error, Message = "API key {KeyId} is stored in a form this engine cannot read ({Problem}); it is refused")]
    private partial void LogBadKeyRow(string keyId, string problem);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refreshing API keys failed ({Error}: {Message}); the keys held stay in force")]
    private partial void LogRefreshFailed(string error, string message);
}
