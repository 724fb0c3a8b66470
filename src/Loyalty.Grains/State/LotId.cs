using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Text;

namespace Loyalty.Grains;

/// <summary>
/// The id of a lot (the transaction that opened it), kept inside the lot as bytes rather than as
/// a reference to a string. A purchase that opens a lot would otherwise leave its transaction id,
/// a new object, referenced from the member's long-lived list of lots: every such purchase then
/// marks the old list for the garbage collector's next young collection and promotes the string
/// through the generations. Measured at 2,000 purchases/s with 100,000 members (most purchases of
/// a 30 s run open their member's first lot), four runs each: the engine's longest GC pause was
/// 15–27 ms with the ids inline against 31–52 ms with the strings (docs/performance.md). Ids that
/// are ASCII and at most <see cref="InlineMax"/> characters are kept inline (the API allows ASCII
/// ids of up to 64); any other text is kept as its string. <see cref="ToString"/> makes the string
/// when asked. <see cref="From"/> cannot fail, so a credit never stops half-way through.
/// </summary>
[Immutable]
public readonly struct LotId : IEquatable<LotId>
{
    /// <summary>
    /// The longest id kept inline: room for a UUID with a prefix (the API allows 64; longer ids are
    /// kept as strings, as before). Each lot carries this many bytes, so it is not larger.
    /// </summary>
    public const int InlineMax = 48;

    /// <summary>The length is kept in a byte: this constant does not compile should the limit outgrow one.</summary>
    private const byte InlineMaxLength = InlineMax;

    private readonly Inline _bytes;
    private readonly byte _length;
    private readonly string? _other;

    private LotId(in Inline bytes, byte length, string? other)
    {
        _bytes = bytes;
        _length = length;
        _other = other;
    }

    /// <summary>
    /// The id of <paramref name="text"/>: inline when it is ASCII and short enough, else the string
    /// itself. Null (never written by this engine, but a ledger row's details might hold it) is the
    /// empty id, so that replaying such a row cannot fail half-way through a change.
    /// </summary>
    public static LotId From(string? text)
    {
        if (text is null)
        {
            return default;
        }

        if (text.Length > InlineMaxLength || !Ascii.IsValid(text))
        {
            return new LotId(default, 0, text);
        }

        Inline bytes = default;
        int written = Encoding.ASCII.GetBytes(text, bytes);
        return new LotId(bytes, (byte)written, null);
    }

    /// <summary>Whether this is the id <paramref name="text"/>, without making a string.</summary>
    public bool Is(string? text)
    {
        if (text is null)
        {
            return false;
        }

        if (_other is not null)
        {
            return string.Equals(_other, text, StringComparison.Ordinal);
        }

        return text.Length == _length && Ascii.Equals(InlineBytes, text);
    }

    /// <summary>The id as a string (made now, unless it was kept as one).</summary>
    public override string ToString() => _other ?? Encoding.ASCII.GetString(InlineBytes);

    /// <inheritdoc />
    /// <remarks>Equal texts are always kept the same way (inline or as a string), so the two ways never compare equal.</remarks>
    public bool Equals(LotId other) =>
        _other is not null || other._other is not null
            ? string.Equals(_other, other._other, StringComparison.Ordinal)
            : InlineBytes.SequenceEqual(other.InlineBytes);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is LotId other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        if (_other is not null)
        {
            return StringComparer.Ordinal.GetHashCode(_other);
        }

        var hash = new HashCode();
        hash.AddBytes(InlineBytes);
        return hash.ToHashCode();
    }

    /// <summary>Whether the two ids are the same.</summary>
    public static bool operator ==(LotId left, LotId right) => left.Equals(right);

    /// <summary>Whether the two ids differ.</summary>
    public static bool operator !=(LotId left, LotId right) => !left.Equals(right);

    [UnscopedRef]
    private ReadOnlySpan<byte> InlineBytes => ((ReadOnlySpan<byte>)_bytes)[.._length];

    [InlineArray(InlineMax)]
    private struct Inline
    {
        private byte _first;
    }
}

/// <summary>A lot id on the wire and in snapshots: its text.</summary>
[GenerateSerializer, Immutable]
public readonly record struct LotIdSurrogate([property: Id(0)] string Text);

/// <summary>Converts lot ids to and from their text for Orleans' serializer and copier.</summary>
[RegisterConverter]
public sealed class LotIdSurrogateConverter : IConverter<LotId, LotIdSurrogate>
{
    /// <inheritdoc />
    public LotId ConvertFromSurrogate(in LotIdSurrogate surrogate) => LotId.From(surrogate.Text);

    /// <inheritdoc />
    public LotIdSurrogate ConvertToSurrogate(in LotId value) => new(value.ToString());
}
