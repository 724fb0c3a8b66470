namespace Loyalty.Host.Access;

/// <summary>What a key may do; see <see cref="AccessPolicy"/> for the calls each scope may make.</summary>
public enum AccessScope
{
    /// <summary>No program; everything, including creating programs and operator keys.</summary>
    Operator = 1,

    /// <summary>One program's rules, catalogue and keys; reads.</summary>
    Admin = 2,

    /// <summary>One program's tills and web shops: purchases, returns, redemptions, enrolments, balances.</summary>
    Pos = 3,

    /// <summary>One program's support staff: adjustments, flags, profiles, referrers, erasure, merges; reads.</summary>
    Support = 4,

    /// <summary>One program's members, ledgers and settings, read only.</summary>
    Reader = 5,
}

/// <summary>Sets of scopes, for the policy table.</summary>
[Flags]
public enum Scopes
{
    /// <summary>No scope.</summary>
    None = 0,

    /// <summary><see cref="AccessScope.Operator"/>.</summary>
    Operator = 1 << AccessScope.Operator,

    /// <summary><see cref="AccessScope.Admin"/>.</summary>
    Admin = 1 << AccessScope.Admin,

    /// <summary><see cref="AccessScope.Pos"/>.</summary>
    Pos = 1 << AccessScope.Pos,

    /// <summary><see cref="AccessScope.Support"/>.</summary>
    Support = 1 << AccessScope.Support,

    /// <summary><see cref="AccessScope.Reader"/>.</summary>
    Reader = 1 << AccessScope.Reader,

    /// <summary>Every scope.</summary>
    Any = Operator | Admin | Pos | Support | Reader,
}

/// <summary>Conversions of scopes to their stored and wire forms.</summary>
public static class AccessScopes
{
    /// <summary>The set holding only <paramref name="scope"/>.</summary>
    public static Scopes AsSet(this AccessScope scope) => (Scopes)(1 << (int)scope);

    /// <summary>The stored name: "operator", "admin", "pos", "support", "reader".</summary>
    public static string ToStored(this AccessScope scope) => scope switch
    {
        AccessScope.Operator => "operator",
        AccessScope.Admin => "admin",
        AccessScope.Pos => "pos",
        AccessScope.Support => "support",
        AccessScope.Reader => "reader",
        _ => throw new ArgumentOutOfRangeException(nameof(scope), scope, "unknown scope"),
    };

    /// <summary>The scope of a stored name; an unknown name is a corrupt row, so it throws.</summary>
    public static AccessScope FromStored(string name) => name switch
    {
        "operator" => AccessScope.Operator,
        "admin" => AccessScope.Admin,
        "pos" => AccessScope.Pos,
        "support" => AccessScope.Support,
        "reader" => AccessScope.Reader,
        _ => throw new InvalidOperationException($"Unknown key scope '{name}' in access_keys."),
    };
}
