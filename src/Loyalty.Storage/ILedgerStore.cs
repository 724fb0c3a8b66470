namespace Loyalty.Storage;

/// <summary>
/// The append-only ledger: the source of truth for every member. Implementations are
/// thread-safe; <see cref="AppendBatchAsync(IReadOnlyList{LedgerEntry}, bool[], IReadOnlyList{DueChange}, IReadOnlyList{ReadOnlyMemory{byte}}?, IReadOnlyList{EntryGroup}, IReadOnlyList{EntryFence}, CancellationToken)"/> is called by one writer at a time per silo, but
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
    /// The <paramref name="dues"/> changes to the due schedule are applied in their order, in
    /// the same transaction, before the entries (an early due time is harmless; a lost one is not).
    /// <paramref name="detailsJson"/>, when given, holds entry i's details already encoded as
    /// <see cref="DetailsJson.WriteUtf8"/> encodes them, empty for an entry without details (see
    /// <see cref="StoresDetailsAsJson"/>). The bytes are the caller's again once this returns:
    /// a store copies what it keeps.
    /// Each of <paramref name="groups"/> is written all or nothing within the transaction: when
    /// one of its entries is skipped, so are the others (see <see cref="EntryGroups.TakeBackPartial"/>).
    /// </summary>
    Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, CancellationToken cancellationToken);

    /// <summary>
    /// <see cref="AppendBatchAsync(IReadOnlyList{LedgerEntry}, bool[], IReadOnlyList{DueChange}, IReadOnlyList{ReadOnlyMemory{byte}}?, IReadOnlyList{EntryGroup}, CancellationToken)"/>,
    /// and an entry of <paramref name="fences"/> whose lock was taken since with a larger epoch is
    /// skipped as a taken sequence is (its group with it). A store that serves one engine ignores
    /// the fences: there a lock's holder dies with the steps it started, and the members refuse the
    /// steps of a holder older than one they have answered.
    /// </summary>
    Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken);

    /// <summary>
    /// Whether the store keeps entry details as JSON text. The commit queue then encodes them on
    /// the appending thread, so that the work is spread over the grains' threads instead of
    /// lengthening the single writer's batches.
    /// </summary>
    bool StoresDetailsAsJson => false;

    /// <summary>
    /// Inserts one member's consecutive entries all or nothing: when any one's (program, member,
    /// sequence) or (program, transaction id) is taken, none is written and the answer is false.
    /// Throws when the transaction fails; then none was written.
    /// </summary>
    async Task<bool> AppendGroupAsync(IReadOnlyList<LedgerEntry> group, CancellationToken cancellationToken)
    {
        bool[] inserted = new bool[group.Count];
        await AppendBatchAsync(group, inserted, [], null, [new EntryGroup(0, group.Count)], cancellationToken);
        return inserted.Length > 0 && Array.TrueForAll(inserted, i => i);
    }

    /// <summary>
    /// Claims up to <paramref name="limit"/> members whose due time is at or before
    /// <paramref name="now"/>, earliest first, by moving their due time to
    /// <paramref name="leaseUntil"/>; rows another silo is claiming at the same moment are skipped.
    /// </summary>
    Task<IReadOnlyList<DueMember>> ClaimDueAsync(DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken);

    /// <summary>Replaces a member's profile (a JSON object), or deletes it when <paramref name="fieldsJson"/> is null.</summary>
    Task WriteProfileAsync(string programId, string memberId, string? fieldsJson, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>A member's profile as a JSON object, or null when it has none.</summary>
    Task<string?> ReadProfileAsync(string programId, string memberId, CancellationToken cancellationToken);

    /// <summary>
    /// Removes what a member's ledger rows may hold of personal data (free-text reasons typed by
    /// staff or members, a merge's among them (not the erasure's own: the API keeps it, a ticket number, not personal data), the flags of flag entries, survey comments, the cause the member chose, the
    /// profile's birth month and the birthday entries' reason), keeping every amount so program
    /// totals stay right.
    /// </summary>
    Task AnonymiseAsync(string programId, string memberId, CancellationToken cancellationToken);

    /// <summary>
    /// Brings every member of a program due by <paramref name="dueAt"/> (a set-based statement over
    /// the enrolment entries, for the rare change of a program's expiry policy): each member then
    /// wakes once and schedules itself under the new policy.
    /// </summary>
    Task ScheduleProgramAsync(string programId, DateTimeOffset dueAt, CancellationToken cancellationToken);

    /// <summary>A member's due time, or null when it has none.</summary>
    Task<DateTimeOffset?> ReadDueAsync(string programId, string memberId, CancellationToken cancellationToken);

    /// <summary>A member's entries with a sequence above <paramref name="afterSequence"/>, oldest first.</summary>
    Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken);

    /// <summary>
    /// The first <paramref name="limit"/> of a member's entries with a sequence above
    /// <paramref name="afterSequence"/>, oldest first: a long ledger read a page at a time.
    /// </summary>
    Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, int limit, CancellationToken cancellationToken);

    /// <summary>Up to <paramref name="limit"/> entries below <paramref name="beforeSequence"/>, newest first.</summary>
    Task<IReadOnlyList<LedgerEntry>> ReadPageAsync(string programId, string memberId, long beforeSequence, int limit, CancellationToken cancellationToken);

    /// <summary>The entry holding a transaction id within a program, or null.</summary>
    Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken);

    /// <summary>
    /// The returns of the purchase <paramref name="purchaseTransactionId"/> (entries of kind
    /// <see cref="LedgerEntryKind.Return"/> that reference it), whichever member wrote them (a
    /// merge moves a purchase's later returns to the survivor), in the order they were recorded.
    /// </summary>
    Task<IReadOnlyList<LedgerEntry>> ReadReturnsOfAsync(string programId, string purchaseTransactionId, CancellationToken cancellationToken);

    /// <summary>
    /// Holds the lock named <paramref name="name"/>, exclusive across every engine on this store,
    /// until the handle is disposed or its engine dies. For changes that must not interleave even
    /// while Orleans runs two activations of one grain (during membership changes, or with a
    /// partitioned view). An SQLite or in-memory store serves one engine, whose single activation
    /// of a grain already serialises its calls: there the lock is a no-op. Each hold has an
    /// <see cref="HeldLock.Epoch"/> larger than that of every hold of the same lock before it.
    /// </summary>
    Task<HeldLock> LockAsync(string name, CancellationToken cancellationToken);

    /// <summary>
    /// The epoch of the latest hold of the lock <paramref name="name"/> across every engine; 0 when
    /// never held, and on a store that serves one engine (which does not fence, see
    /// <see cref="AppendBatchAsync(IReadOnlyList{LedgerEntry}, bool[], IReadOnlyList{DueChange}, IReadOnlyList{ReadOnlyMemory{byte}}?, IReadOnlyList{EntryGroup}, IReadOnlyList{EntryFence}, CancellationToken)"/>).
    /// </summary>
    Task<long> ReadLockEpochAsync(string name, CancellationToken cancellationToken);

    /// <summary>
    /// Up to <paramref name="limit"/> entries of a program after <paramref name="after"/>, in the
    /// order their commits became visible, with their positions. A later call never returns an
    /// entry positioned at or before one an earlier call returned: an entry whose commit is still
    /// in flight on any engine holds back every entry that might be positioned after it.
    /// </summary>
    Task<IReadOnlyList<PositionedEntry>> ReadEventsAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken);

    /// <summary>
    /// Up to <paramref name="limit"/> committed entries of a program after <paramref name="after"/>,
    /// in the order of <see cref="ReadEventsAsync"/>, for the report rebuild, which runs while
    /// nothing writes to the program. Unlike <see cref="ReadEventsAsync"/>, it does not hold back
    /// entries behind a transaction still open elsewhere on the server: a rebuild would leave them
    /// out of the totals for good.
    /// </summary>
    Task<IReadOnlyList<PositionedEntry>> ReadCommittedAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken) =>
        ReadEventsAsync(programId, after, limit, cancellationToken);

    /// <summary>
    /// The position of a program's last entry that <see cref="ReadEventsAsync"/> would return now
    /// (<see cref="EventPosition.Start"/> when none): reading after it gives only what commits later.
    /// </summary>
    Task<EventPosition> ReadEventsEndAsync(string programId, CancellationToken cancellationToken);

    /// <summary>Whether the program has any ledger entry (every committed one, whatever is still in flight elsewhere).</summary>
    Task<bool> HasEntriesAsync(string programId, CancellationToken cancellationToken);

    /// <summary>One member's entry with its event position, or null when there is none.</summary>
    Task<PositionedEntry?> ReadEventAsync(string programId, string memberId, long sequence, CancellationToken cancellationToken);

    /// <summary>
    /// A program's report totals for the UTC days in [<paramref name="fromDay"/>, <paramref name="toDay"/>),
    /// per day, or (<paramref name="perDay"/> false) summed over the days and given as <paramref name="fromDay"/>'s.
    /// They include every entry committed (the totals commit with their entries).
    /// </summary>
    Task<IReadOnlyList<Reports.ReportTotal>> ReadTotalsAsync(string programId, int fromDay, int toDay, bool perDay, CancellationToken cancellationToken);

    /// <summary>
    /// Replaces every report total of a program (a rebuild from its ledger) and takes the program
    /// off the list of those to rebuild, in one transaction.
    /// </summary>
    Task ReplaceTotalsAsync(string programId, Reports.ReportTotals totals, CancellationToken cancellationToken);

    /// <summary>Puts a program (or, for null, every program with entries) on the list of those whose totals are to be rebuilt.</summary>
    Task MarkTotalsForRebuildAsync(string? programId, CancellationToken cancellationToken);

    /// <summary>The programs whose report totals are to be rebuilt from their ledgers (those with entries older than the totals).</summary>
    Task<IReadOnlyList<string>> ReadTotalsToRebuildAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Where an entry stands in a program's event order. On PostgreSQL: the id of the transaction that
/// wrote it, then an ascending number within it. Reads stop below the oldest transaction still
/// running, so no entry can later appear before one already read even when several engines commit
/// at once. On SQLite and in memory one writer commits at a time: the row's insertion number alone.
/// </summary>
/// <param name="Commit">The writing transaction's id (0 where one writer commits at a time).</param>
/// <param name="Row">Ascending within a commit (and across commits where <paramref name="Commit"/> is 0).</param>
public readonly record struct EventPosition(long Commit, long Row) : IComparable<EventPosition>
{
    /// <summary>Before every entry.</summary>
    public static readonly EventPosition Start = new(0, 0);

    /// <inheritdoc />
    public int CompareTo(EventPosition other) => Commit != other.Commit ? Commit.CompareTo(other.Commit) : Row.CompareTo(other.Row);

    /// <summary>Whether <paramref name="a"/> comes before <paramref name="b"/>.</summary>
    public static bool operator <(EventPosition a, EventPosition b) => a.CompareTo(b) < 0;

    /// <summary>Whether <paramref name="a"/> comes after <paramref name="b"/>.</summary>
    public static bool operator >(EventPosition a, EventPosition b) => a.CompareTo(b) > 0;

    /// <summary>Whether <paramref name="a"/> is not after <paramref name="b"/>.</summary>
    public static bool operator <=(EventPosition a, EventPosition b) => a.CompareTo(b) <= 0;

    /// <summary>Whether <paramref name="a"/> is not before <paramref name="b"/>.</summary>
    public static bool operator >=(EventPosition a, EventPosition b) => a.CompareTo(b) >= 0;
}

/// <summary>A ledger entry with its position in its program's event order.</summary>
public sealed record PositionedEntry(EventPosition Position, LedgerEntry Entry);

/// <summary>
/// A lock held (see <see cref="ILedgerStore.LockAsync"/>); disposing it releases it. Its epoch
/// lets what was done under it be told from what a later holder does: a step the holder started
/// may still run after the holder's engine died and the lock passed on (a fencing token).
/// </summary>
public abstract class HeldLock : IAsyncDisposable
{
    /// <summary>Larger than the epoch of every earlier hold of the same lock, on every engine of the store.</summary>
    public abstract long Epoch { get; }

    /// <inheritdoc />
    public abstract ValueTask DisposeAsync();
}

/// <summary>
/// The lock of a store that serves one engine: nothing to hold, and the epoch counts holds in
/// this process (the steps of an engine that stopped stopped with it).
/// </summary>
internal sealed class OneEngineLock(long epoch) : HeldLock
{
    private static long s_lastEpoch;

    public override long Epoch => epoch;

    /// <summary>A hold with the next epoch.</summary>
    public static Task<HeldLock> Take() => Task.FromResult<HeldLock>(new OneEngineLock(Interlocked.Increment(ref s_lastEpoch)));

    public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
