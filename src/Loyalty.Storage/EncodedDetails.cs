using System.Buffers;

namespace Loyalty.Storage;

/// <summary>
/// An entry's details as UTF-8 JSON, encoded when the entry is queued (<see cref="DetailsJson.Encode"/>):
/// the first <see cref="Length"/> bytes of <see cref="Array"/>, or nothing for an entry without
/// details. An array taken from a pool goes back to it once (<see cref="Return"/>), after the
/// entry's batch is written; the store has copied what it keeps by then.
/// </summary>
/// <remarks>
/// Most entries are earns, whose JSON (a few hundred bytes) was a new array per purchase, about
/// 5 % of what a purchase allocated. A pooled array holds bytes only, so reusing one gives the
/// collector no new reference to trace from the old generation.
/// </remarks>
internal readonly struct EncodedDetails
{
    /// <summary>Longer JSON gets an array of its own: a pool of large arrays would hold memory for rare entries.</summary>
    public const int PooledBytesMax = 16 * 1024;

    private readonly ArrayPool<byte>? _pool;

    /// <summary>The whole of <paramref name="array"/>, an array of its own (from no pool).</summary>
    public EncodedDetails(byte[] array)
        : this(array, array.Length, pool: null)
    {
    }

    private EncodedDetails(byte[] array, int length, ArrayPool<byte>? pool) => (Array, Length, _pool) = (array, length, pool);

    /// <summary>The array holding the JSON; null for none.</summary>
    public byte[]? Array { get; }

    /// <summary>The JSON's length in bytes.</summary>
    public int Length { get; }

    /// <summary>The JSON; empty for none.</summary>
    public ReadOnlyMemory<byte> Json => Array is null ? default : Array.AsMemory(0, Length);

    /// <summary>A copy of <paramref name="json"/>: in an array of <paramref name="pool"/> when given and the JSON is short enough, else exact.</summary>
    public static EncodedDetails Of(ReadOnlySpan<byte> json, ArrayPool<byte>? pool)
    {
        if (pool is null || json.Length > PooledBytesMax)
        {
            return new EncodedDetails(json.ToArray());
        }

        byte[] rented = pool.Rent(json.Length);
        json.CopyTo(rented);
        return new EncodedDetails(rented, json.Length, pool);
    }

    /// <summary>Gives a pooled array back. Call once, when nothing reads the bytes any more.</summary>
    public void Return() => _pool?.Return(Array!);
}
