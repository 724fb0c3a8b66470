using System.Text;

namespace Loyalty;

/// <summary>
/// References to the grains of one interface with string keys, made without Orleans' lookup of
/// the interface's grain type on every call (which parses type names and allocates; at tens of
/// thousands of purchases a second it shows in profiles). The grain type and interface type are
/// taken from the first reference and reused: they follow from the interface alone, so they are
/// the same in every silo and client.
/// </summary>
/// <typeparam name="TGrain">The grain interface.</typeparam>
public sealed class GrainReferences<TGrain>(IGrainFactory grains)
    where TGrain : IGrainWithStringKey
{
    private Resolved? _resolved;

    /// <summary>The reference to the grain with this key.</summary>
    public TGrain Get(string key)
    {
        if (_resolved is { } resolved)
        {
            return (TGrain)grains.GetGrain(GrainId.Create(resolved.Grain, key), resolved.Interface);
        }

        TGrain first = grains.GetGrain<TGrain>(key);
        var reference = (GrainReference)(object)first;
        // A benign race: two first calls resolve the same types.
        _resolved = new Resolved(reference.GrainId.Type, reference.InterfaceType);
        return first;
    }

    /// <summary>
    /// The reference to the grain whose key is <paramref name="first"/> and <paramref name="second"/>
    /// joined by a slash (as <see cref="LoyaltyIds.MemberKey"/> joins a member's): the same grain as
    /// <c>Get(first + "/" + second)</c>, without making that string. The key's UTF-8 bytes are written
    /// once, into the array the grain id keeps.
    /// </summary>
    public TGrain Get(string first, string second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        if (_resolved is not { } resolved)
        {
            return Get(first + "/" + second);
        }

        int firstBytes = Encoding.UTF8.GetByteCount(first);
        var key = new byte[checked(firstBytes + 1 + Encoding.UTF8.GetByteCount(second))];
        Encoding.UTF8.GetBytes(first, key);
        key[firstBytes] = (byte)'/';
        Encoding.UTF8.GetBytes(second, key.AsSpan(firstBytes + 1));
        return (TGrain)grains.GetGrain(GrainId.Create(resolved.Grain, new IdSpan(key)), resolved.Interface);
    }

    private sealed record Resolved(GrainType Grain, GrainInterfaceType Interface);
}
