using Grpc.Core;

namespace Loyalty.Host.Access;

/// <summary>The rate limits of one key on this node, made on its first call.</summary>
public sealed class KeyQuota(ScopeQuota limits, TimeProvider clock)
{
    private readonly TokenBucket _unary = new(limits.UnaryPerSecond, limits.UnaryBurst, clock.GetTimestamp(), clock.TimestampFrequency);
    private readonly TokenBucket _purchases = new(limits.PurchasesPerSecond, limits.PurchasesBurst, clock.GetTimestamp(), clock.TimestampFrequency);
    private int _streams;

    /// <summary>Takes one unary call from the key's allowance.</summary>
    public bool TryTakeUnary(out TimeSpan retryAfter) => _unary.TryTake(clock.GetTimestamp(), out retryAfter);

    /// <summary>Takes one purchase from the key's allowance.</summary>
    public bool TryTakePurchase(out TimeSpan retryAfter) => _purchases.TryTake(clock.GetTimestamp(), out retryAfter);

    /// <summary>Counts a stream opened, unless the key already has as many as it may.</summary>
    public bool TryOpenStream()
    {
        if (Interlocked.Increment(ref _streams) <= limits.StreamsMax)
        {
            return true;
        }

        Interlocked.Decrement(ref _streams);
        return false;
    }

    /// <summary>Counts a stream closed.</summary>
    public void CloseStream() => Interlocked.Decrement(ref _streams);
}

/// <summary>
/// Who is calling: the key the call authenticated with and its quota. Put on the call by
/// <see cref="AccessInterceptor"/>; the streaming handlers check each message with it.
/// </summary>
public sealed class Caller(AccessKey key, KeyQuota quota)
{
    private const string UserStateKey = "loyalty.caller";

    /// <summary>The key.</summary>
    public AccessKey Key { get; } = key;

    /// <summary>The key's rate limits on this node.</summary>
    public KeyQuota Quota { get; } = quota;

    /// <summary>The caller of a call that passed the interceptor.</summary>
    public static Caller Of(ServerCallContext context) =>
        context.UserState.TryGetValue(UserStateKey, out object? caller) && caller is Caller found
            ? found
            : throw new InvalidOperationException("The call did not pass the access interceptor.");

    /// <summary>Puts the caller on the call.</summary>
    public void AttachTo(ServerCallContext context) => context.UserState[UserStateKey] = this;

    /// <summary>Why the key may not act on <paramref name="programId"/>, or null when it may.</summary>
    public string? RefusesProgram(string programId) =>
        Key.Scope == AccessScope.Operator || string.Equals(Key.ProgramId, programId, StringComparison.Ordinal)
            ? null
            : programId.Length == 0
                ? "this call needs an operator key"
                : $"the key belongs to another program than '{Bounded.Echo(programId)}'";

    /// <summary>
    /// <paramref name="storeId"/> when the key is restricted to stores (the interceptor has checked
    /// it is one of them), for the member to check what the call acts on was made there; null for
    /// a key that may act for any store.
    /// </summary>
    public string? StoreIfRestricted(string storeId) => Key.StoreIds.Count > 0 ? storeId : null;

    /// <summary>Why the key may not act for <paramref name="storeId"/>, or null when it may.</summary>
    public string? RefusesStore(string storeId) =>
        Key.StoreIds.Count == 0 || Key.StoreIds.Contains(storeId)
            ? null
            : $"the key may not act for store '{Bounded.Echo(storeId)}'";
}
