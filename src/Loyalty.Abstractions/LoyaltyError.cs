namespace Loyalty;

/// <summary>
/// Why the engine refused a request. The names follow gRPC status codes so the gateway maps
/// them one to one; there is deliberately no "internal" member.
/// </summary>
public enum LoyaltyError
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>A field is missing, malformed or out of range.</summary>
    InvalidArgument = 1,

    /// <summary>The program or member does not exist.</summary>
    NotFound = 2,

    /// <summary>The id is taken by a different request (same transaction id, other content).</summary>
    AlreadyExists = 3,

    /// <summary>The request is well-formed but the state does not allow it (e.g. wrong currency).</summary>
    FailedPrecondition = 4,

    /// <summary>The engine could not make the change durable; nothing was acknowledged. Retry.</summary>
    Unavailable = 5,

    /// <summary>The caller may not act on this (a till of one store ending another store's reservation).</summary>
    PermissionDenied = 6,
}
