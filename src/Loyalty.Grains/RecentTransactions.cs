namespace Loyalty.Grains;

/// <summary>
/// A member's newest transactions, so that a resend is answered from memory: a ring whose slots
/// are values, not objects. Remembering a purchase overwrites numbers in an array the member
/// already holds and stores no reference, so the garbage collector finds nothing new to trace
/// from the member (which lives in the old generation) at its next pause. The ring starts at two
/// slots and doubles, up to the capacity asked for, when a transaction finds it full
/// (<see cref="Prepare"/>, which <see cref="Add"/> calls first): at most three new arrays per
/// member, and a member with one purchase holds 88 bytes here, not the 536 of a full ring of 16,
/// which counts with a million members held.
/// Older resends are caught by the ledger's unique index, as before.
/// </summary>
/// <remarks>
/// A transaction is known by a 64-bit hash of its id (<see cref="HashOf"/>). A hash that matches
/// with a matching content fingerprint (itself a hash over the id and the content) is the same
/// request; with another fingerprint, callers treat it as a reuse of the id and refuse it before
/// anything is applied (two ids of one member sharing a hash among its newest 16 is about 2^-60
/// per purchase), and internal entries are recognised by their own fixed fingerprints.
/// </remarks>
[GenerateSerializer]
public sealed class RecentTransactions
{
    [Id(0)] private Remembered[] _slots = [];
    [Id(1)] private int _count;
    [Id(2)] private int _next;

    /// <summary>How many transactions are remembered (at most the capacity last asked for).</summary>
    public int Count => _count;

    /// <summary>The hash a transaction id is remembered by.</summary>
    private static long HashOf(string transactionId)
    {
        var hash = new Fingerprint();
        hash.Add(transactionId);
        return hash.Value;
    }

    /// <summary>Remembers a transaction, forgetting the oldest beyond <paramref name="capacity"/>.</summary>
    public void Add(string transactionId, long fingerprint, Points points, long sequence, int capacity)
    {
        Prepare(capacity);

        _slots[_next] = new Remembered(HashOf(transactionId), fingerprint, points.Value, sequence);
        _next = (_next + 1) % _slots.Length;
        _count = Math.Min(_count + 1, _slots.Length);
    }

    /// <summary>The ring's slots now (for tests of its growth).</summary>
    internal int Slots => _slots.Length;

    /// <summary>
    /// Makes room now, not at the next transaction, for the next one to be remembered without
    /// forgetting any of the newest <paramref name="capacity"/>: a full ring below the capacity
    /// doubles (at least two slots, at most the capacity), and a ring above it (the option was
    /// lowered) shrinks to it.
    /// </summary>
    public void Prepare(int capacity)
    {
        if (_slots.Length > capacity)
        {
            Resize(capacity);
        }
        else if (_count == _slots.Length && _slots.Length < capacity)
        {
            Resize(Math.Min(capacity, Math.Max(2, _slots.Length * 2)));
        }
    }

    /// <summary>The newest remembered transaction with this id's hash, or null.</summary>
    public Remembered? Find(string transactionId)
    {
        long id = HashOf(transactionId);
        for (int i = 1; i <= _count; i++)
        {
            // Newest first: a resend is usually of something recent.
            ref readonly Remembered slot = ref _slots[(_next - i + _slots.Length) % _slots.Length];
            if (slot.IdHash == id)
            {
                return slot;
            }
        }

        return null;
    }

    /// <summary>Keeps the newest transactions in a ring of the new size (the option may change between runs).</summary>
    private void Resize(int capacity)
    {
        if (capacity < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "At least one transaction must be remembered.");
        }

        int kept = Math.Min(_count, capacity);
        var slots = new Remembered[capacity];
        for (int i = 0; i < kept; i++)
        {
            // Oldest kept first, so the newest ends just before the next slot.
            slots[i] = _slots[(_next - kept + i + _slots.Length) % _slots.Length];
        }

        (_slots, _count, _next) = (slots, kept, kept % capacity);
    }
}

/// <summary>A remembered transaction: the hash of its id, its content fingerprint, its points and its entry.</summary>
[GenerateSerializer, Immutable]
public readonly record struct Remembered(
    [property: Id(0)] long IdHash,
    [property: Id(1)] long Fingerprint,
    [property: Id(2)] long PointsValue,
    [property: Id(3)] long Sequence)
{
    /// <summary>The points the transaction recorded.</summary>
    public Points Points => new(PointsValue);
}
