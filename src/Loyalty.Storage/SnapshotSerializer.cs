using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Orleans.Storage;

namespace Loyalty.Storage;

/// <summary>
/// A grain state that the ledger alone rebuilds (a member's snapshot): a stored copy is only a
/// shortcut, so one that cannot be read is read as none rather than blocking its grain.
/// </summary>
public interface ILedgerRebuiltState;

/// <summary>
/// The snapshot storage's serializer: Orleans' binary format, except that a stored payload of an
/// <see cref="ILedgerRebuiltState"/> that cannot be read (a torn or hand-edited row, a format a
/// later version wrote and this one does not know) reads as no state at all. The storage then
/// hands the grain a new state with the row's version, so the grain replays its whole ledger and
/// its next snapshot replaces the row. Every other state (a program's settings, a reward's stock,
/// a referral code's owner) has no ledger behind it: its read still fails, loudly.
/// </summary>
/// <remarks>
/// Only the payload's decoding is forgiven here: a storage that cannot be reached fails before
/// the payload is read, and the grain's load fails as it did.
/// </remarks>
public sealed partial class SnapshotSerializer(IGrainStorageSerializer inner, ILogger<SnapshotSerializer> logger, TimeProvider clock) : IGrainStorageSerializer
{
    /// <summary>Lines a second at most about unreadable snapshots: a bad deployment could make every member's unreadable.</summary>
    private const int UnreadableLinesPerSecond = 5;

    /// <summary>
    /// Snapshots read as none because they could not be decoded (tag <c>state</c>: the stored
    /// type), for every serializer in the process: the log's lines are budgeted, the count is not.
    /// </summary>
    private static readonly Counter<long> UnreadableRead =
        LedgerCommitQueue.Meter.CreateCounter<long>("loyalty.snapshots.unreadable", "{snapshot}");

    private readonly LogBudget _unreadableLines = new(UnreadableLinesPerSecond, clock);

    private long _unreadable;

    /// <summary>Snapshots read as none because they could not be decoded, since start.</summary>
    public long Unreadable => Interlocked.Read(ref _unreadable);

    /// <inheritdoc />
    public BinaryData Serialize<T>(T? input) => inner.Serialize(input);

    /// <inheritdoc />
    public T? Deserialize<T>(BinaryData input)
    {
        if (!typeof(ILedgerRebuiltState).IsAssignableFrom(typeof(T)))
        {
            return inner.Deserialize<T>(input);
        }

        try
        {
            return inner.Deserialize<T>(input);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Interlocked.Increment(ref _unreadable);
            UnreadableRead.Add(1, new KeyValuePair<string, object?>("state", typeof(T).Name));
            if (_unreadableLines.TryTake(out long leftOut))
            {
                LogUnreadable(logger, e, typeof(T).Name, input.ToMemory().Length, leftOut);
            }

            // Null: the storage makes a new state and keeps the row's version for the next write.
            return default;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A stored {StateType} of {Bytes} bytes could not be read; the ledger alone rebuilds it and its next snapshot replaces it ({LeftOut} such lines left out since the last)")]
    private static partial void LogUnreadable(ILogger logger, Exception exception, string stateType, int bytes, long leftOut);
}
