namespace Loyalty.Host.Access;

/// <summary>
/// Per-key limits, by scope. Bound from the <c>Quotas</c> section, e.g. <c>Quotas:Pos:PurchasesPerSecond</c>.
/// The limits hold per node: a key used on three nodes at once may reach three times them.
/// </summary>
public sealed class QuotaOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Quotas";

    /// <summary>Limits of operator keys.</summary>
    public ScopeQuota Operator { get; set; } = new() { UnaryPerSecond = 1_000, UnaryBurst = 2_000, PurchasesPerSecond = 100_000, PurchasesBurst = 200_000, StreamsMax = 256 };

    /// <summary>Limits of admin keys.</summary>
    public ScopeQuota Admin { get; set; } = new() { UnaryPerSecond = 50, UnaryBurst = 100, PurchasesPerSecond = 1, PurchasesBurst = 1, StreamsMax = 4 };

    /// <summary>Limits of POS keys: a large retailer's busy hour with headroom, per key.</summary>
    public ScopeQuota Pos { get; set; } = new() { UnaryPerSecond = 5_000, UnaryBurst = 10_000, PurchasesPerSecond = 50_000, PurchasesBurst = 100_000, StreamsMax = 256 };

    /// <summary>Limits of support keys.</summary>
    public ScopeQuota Support { get; set; } = new() { UnaryPerSecond = 100, UnaryBurst = 200, PurchasesPerSecond = 1, PurchasesBurst = 1, StreamsMax = 4 };

    /// <summary>Limits of reader keys.</summary>
    public ScopeQuota Reader { get; set; } = new() { UnaryPerSecond = 500, UnaryBurst = 1_000, PurchasesPerSecond = 1, PurchasesBurst = 1, StreamsMax = 4 };

    /// <summary>Why the limits cannot be used (a rate of 0 would refuse everything), or null.</summary>
    public string? Problem() =>
        Enum.GetValues<AccessScope>().Select(s => (Scope: s, Quota: For(s)))
            .Where(q => q.Quota.UnaryPerSecond <= 0 || q.Quota.UnaryBurst < 1 || q.Quota.PurchasesPerSecond <= 0 || q.Quota.PurchasesBurst < 1 || q.Quota.StreamsMax < 0)
            .Select(q => $"Quotas:{q.Scope}: rates must be above 0, bursts at least 1, StreamsMax at least 0")
            .FirstOrDefault();

    /// <summary>The limits of a scope.</summary>
    public ScopeQuota For(AccessScope scope) => scope switch
    {
        AccessScope.Operator => Operator,
        AccessScope.Admin => Admin,
        AccessScope.Pos => Pos,
        AccessScope.Support => Support,
        AccessScope.Reader => Reader,
        _ => throw new ArgumentOutOfRangeException(nameof(scope), scope, "unknown scope"),
    };
}

/// <summary>The limits of one key.</summary>
public sealed class ScopeQuota
{
    /// <summary>Unary calls per second (purchases by <c>Accrue</c> count as purchases instead).</summary>
    public double UnaryPerSecond { get; set; }

    /// <summary>Unary calls allowed at once after a quiet spell.</summary>
    public double UnaryBurst { get; set; }

    /// <summary>Purchases per second, on streams and by <c>Accrue</c>.</summary>
    public double PurchasesPerSecond { get; set; }

    /// <summary>Purchases allowed at once after a quiet spell.</summary>
    public double PurchasesBurst { get; set; }

    /// <summary>Streams (Ingest, IngestBatches, reflection) open at once.</summary>
    public int StreamsMax { get; set; }
}
