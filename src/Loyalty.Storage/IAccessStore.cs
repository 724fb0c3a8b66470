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

    /// <summary>Inserts a key; false when its id is taken (nothing is changed then).</summary>
    Task<bool> TryInsertKeyAsync(AccessKeyRow key, CancellationToken cancellationToken);

    /// <summary>Marks a key revoked at <paramref name="at"/> unless it already is; null when there is no such key.</summary>
    Task<AccessKeyRow?> RevokeKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken);

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
