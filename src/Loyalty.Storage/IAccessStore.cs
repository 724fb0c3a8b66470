namespace Loyalty.Storage;

/// <summary>An API key as stored: everything but the secret, which is kept only as its SHA-256.</summary>
/// <param name="KeyId">The public id, unique.</param>
/// <param name="ProgramId">The key's program; empty for operator keys.</param>
/// <param name="Scope">The scope's name (operator, admin, pos, support, reader).</param>
/// <param name="StoreIds">Comma-separated store ids a POS key is restricted to; empty for any store.</param>
/// <param name="Name">A label for people.</param>
/// <param name="SecretSha256">Lower-case hex SHA-256 of the secret.</param>
/// <param name="CreatedAt">When the key was created.</param>
/// <param name="CreatedBy">The key id that created it, or "bootstrap" / "configuration".</param>
/// <param name="ExpiresAt">When the key stops working by itself; null for never.</param>
/// <param name="RevokedAt">When the key was revoked; null while it is not.</param>
public sealed record AccessKeyRow(
    string KeyId,
    string ProgramId,
    string Scope,
    string StoreIds,
    string Name,
    string SecretSha256,
    DateTimeOffset CreatedAt,
    string CreatedBy,
    DateTimeOffset? ExpiresAt,
    DateTimeOffset? RevokedAt)
{
    /// <summary>Whether the key was revoked, or expired, before <paramref name="at"/>.</summary>
    public bool EndedBefore(DateTimeOffset at) => RevokedAt < at || ExpiresAt < at;
}

/// <summary>
/// The bounds a new key is held to, checked by the store under the same lock as its insert, so
/// that concurrent creates, on one node or several, can never pass them together.
/// </summary>
/// <param name="ActiveMax">Keys of the program (operator keys for an empty id) that work at <paramref name="Now"/>, before the new one.</param>
/// <param name="CreatedMax">Keys of the program created at or after <paramref name="CreatedSince"/>, revoked ones included, before the new one; <see cref="int.MaxValue"/> for no bound.</param>
/// <param name="CreatedSince">Where the window <paramref name="CreatedMax"/> counts in starts.</param>
/// <param name="Now">The instant a key's expiry is compared with.</param>
public sealed record KeyAllowance(int ActiveMax, int CreatedMax, DateTimeOffset CreatedSince, DateTimeOffset Now);

/// <summary>What became of a key's insert.</summary>
public enum KeyInsert
{
    /// <summary>The key is stored.</summary>
    Inserted,

    /// <summary>A key with its id is stored already (perhaps ended long ago); nothing changed.</summary>
    IdTaken,

    /// <summary>Its program has <see cref="KeyAllowance.ActiveMax"/> working keys; nothing changed.</summary>
    TooManyActive,

    /// <summary>Its program had <see cref="KeyAllowance.CreatedMax"/> keys created in the window; nothing changed.</summary>
    TooManyCreated,
}

/// <summary>What became of a revocation.</summary>
/// <param name="Key">The key as stored afterwards; null when there is no such key.</param>
/// <param name="LastOperatorKey">True when it was refused because the key is the last working operator key (nothing changed).</param>
public sealed record KeyRevocation(AccessKeyRow? Key, bool LastOperatorKey);

/// <summary>One record of the audit trail.</summary>
/// <param name="Id">Ascending with time of writing, per database.</param>
/// <param name="ProgramId">The program the call was about; empty for operator-level calls.</param>
/// <param name="At">When the call started.</param>
/// <param name="KeyId">The key that made the call.</param>
/// <param name="Method">The gRPC method's full name.</param>
/// <param name="Target">What the call was about (a member, a key).</param>
/// <param name="Outcome">The status code name, or "STARTED" while it runs.</param>
public sealed record AuditRow(long Id, string ProgramId, DateTimeOffset At, string KeyId, string Method, string Target, string Outcome);

/// <summary>
/// API keys and the audit trail, in the engine's database, so that every node of a cluster sees
/// the same keys (each polls <see cref="ReadKeysChangedSinceAsync"/>). Implementations are thread-safe.
/// </summary>
public interface IAccessStore
{
    /// <summary>The outcome recorded before a call has finished.</summary>
    const string OutcomeStarted = "STARTED";

    /// <summary>
    /// How long another operator key must still work for a revocation to leave it as the last one:
    /// a key that expires within the hour would leave nobody able to issue keys soon after.
    /// </summary>
    static readonly TimeSpan OperatorKeyLeftMargin = TimeSpan.FromHours(1);

    /// <summary>
    /// Inserts a key unless its id is taken or, with an <paramref name="allowance"/>, its program
    /// is at one of the allowance's bounds. The checks and the insert are one step against every
    /// other key change of every node (nothing is changed on a refusal).
    /// </summary>
    Task<KeyInsert> InsertKeyAsync(AccessKeyRow key, KeyAllowance? allowance, CancellationToken cancellationToken);

    /// <summary>
    /// Marks a key revoked at <paramref name="at"/> unless it already is, or unless no other
    /// operator key works until <see cref="OperatorKeyLeftMargin"/> after it: that check and the revocation are one step
    /// against every other key change, so two operators revoking the last two keys at once cannot
    /// lock everyone out.
    /// </summary>
    Task<KeyRevocation> RevokeKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>
    /// Keys changed (created or revoked) at or after <paramref name="since"/> by the database's
    /// clock (all keys when null), and that clock's time when it answered.
    /// </summary>
    Task<(IReadOnlyList<AccessKeyRow> Keys, DateTimeOffset DatabaseNow)> ReadKeysChangedSinceAsync(DateTimeOffset? since, CancellationToken cancellationToken);

    /// <summary>
    /// Clears the name and store ids of the keys revoked, or expired, before
    /// <paramref name="before"/> (what makes a row large), and returns how many it cleared. The
    /// rows stay, with their id, hash and end: an id is never stored again, so a configured key
    /// that was revoked stays revoked (see <c>AccessLifecycle</c>), and the audit trail's ids still
    /// name a key. Their change time is kept, so no node reads them again.
    /// </summary>
    Task<int> ClearKeysEndedBeforeAsync(DateTimeOffset before, CancellationToken cancellationToken);

    /// <summary>Appends an audit record (its <see cref="AuditRow.Id"/> is ignored) and returns its id.</summary>
    Task<long> AppendAuditAsync(AuditRow record, CancellationToken cancellationToken);

    /// <summary>Sets the outcome of the audit record <paramref name="id"/>.</summary>
    Task CompleteAuditAsync(long id, string outcome, CancellationToken cancellationToken);

    /// <summary>Up to <paramref name="limit"/> records of a program with an id below <paramref name="beforeId"/>, newest first.</summary>
    Task<IReadOnlyList<AuditRow>> ReadAuditAsync(string programId, long beforeId, int limit, CancellationToken cancellationToken);
}
