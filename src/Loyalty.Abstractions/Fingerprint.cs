namespace Loyalty;

/// <summary>
/// A 64-bit FNV-1a hash over canonical fields. It tells a resend (same transaction id, same
/// content) from a conflicting reuse of the id (same id, other content) without storing the
/// whole event. It is not a security boundary.
/// </summary>
public struct Fingerprint
{
    private const ulong OffsetBasis = 14695981039346656037UL;
    private const ulong Prime = 1099511628211UL;

    private ulong _hash;
    private bool _started;

    /// <summary>The hash so far, as a signed value that fits a BIGINT column.</summary>
    public readonly long Value => unchecked((long)(_started ? _hash : OffsetBasis));

    /// <summary>Mixes a string (with its length, so "ab"+"c" differs from "a"+"bc").</summary>
    public void Add(string? value)
    {
        value ??= string.Empty;
        Add(value.Length);
        foreach (char c in value)
        {
            Mix(unchecked((byte)c));
            Mix(unchecked((byte)(c >> 8)));
        }
    }

    /// <summary>Mixes a 64-bit integer.</summary>
    public void Add(long value)
    {
        ulong v = unchecked((ulong)value);
        for (int i = 0; i < 8; i++)
        {
            Mix(unchecked((byte)(v >> (i * 8))));
        }
    }

    private void Mix(byte b)
    {
        if (!_started)
        {
            _hash = OffsetBasis;
            _started = true;
        }

        _hash = unchecked((_hash ^ b) * Prime);
    }
}
