namespace Loyalty.Storage;

/// <summary>
/// The append-only ledger: the source of truth for every member. Implementations are
/// thread-safe; <see cref="AppendBatchAsync"/> is called by one writer at a time per silo, but
/// several silos may append to the same database concurrently.
/// </summary>
public interface ILedgerStore
{
    /// <summary>Creates or upgrades the schema; safe to call from several processes at once.</summary>
    Task MigrateAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Inserts the entries in one transaction. An entry whose (program, member, sequence) or
    /// (program, transaction id) is already taken is skipped, not an error:
    /// <paramref name="inserted"/>[i] tells whether entry i was written.
    /// Throws when the transaction fails; then nothing of the batch was written.
    /// </summary>
    Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, CancellationToken cancellationToken);

    /// <summary>A member's entries with a sequence above <paramref name="afterSequence"/>, oldest first.</summary>
    Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken);

    /// <summary>Up to <paramref name="limit"/> entries below <paramref name="beforeSequence"/>, newest first.</summary>
    Task<IReadOnlyList<LedgerEntry>> ReadPageAsync(string programId, string memberId, long beforeSequence, int limit, CancellationToken cancellationToken);

    /// <summary>The entry holding a transaction id within a program, or null.</summary>
    Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken);
}
