namespace Loyalty.Host.Access;

/// <summary>How the gateway authenticates. Bound from the <c>Auth</c> section. There is no mode without keys.</summary>
public sealed class AuthOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Auth";

    /// <summary>
    /// An operator key a deployment provides (a token made by <c>KeyTokens</c>' format, e.g. from a
    /// secret store). It is stored on start if missing. When empty, the first start of an engine
    /// whose database holds no key makes one and writes it to <see cref="OperatorKeyFile"/>.
    /// </summary>
    public string BootstrapOperatorKey { get; set; } = "";

    /// <summary>Where the first start writes the operator key it made (readable by the owner only).</summary>
    public string OperatorKeyFile { get; set; } = "data/operator.key";

    /// <summary>How often each node reads keys created or revoked elsewhere: the delay before a revocation holds everywhere.</summary>
    public int RefreshIntervalMs { get; set; } = 1_000;

    /// <summary>
    /// Keys a program's own admin keys may create for it in any 24 hours, revoked ones included
    /// (at least 1; operators are not held to it): every node holds every key it has read,
    /// revoked and expired ones too (they answer <c>ListKeys</c> and say why a key no longer
    /// works), so keys made and revoked in a loop must not grow them at will. The check and the
    /// insert are not atomic: concurrent creates may pass it by the calls in flight.
    /// </summary>
    public int KeysCreatedPerDayMax { get; set; } = 200;

    /// <summary>
    /// Days a revoked or expired key is kept (listed by <c>ListKeys</c> with revoked ones, and
    /// refused as revoked or expired) before every node forgets it and its row is cleared to its id,
    /// hash and end; at least 1. With <see cref="KeysCreatedPerDayMax"/> it bounds the keys held.
    /// </summary>
    public int EndedKeysKeptDays { get; set; } = 30;
}
