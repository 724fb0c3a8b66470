using Loyalty.Api;
using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using Loyalty.Storage;

namespace Loyalty.Host.Access;

/// <summary>A key as the gateway holds it in memory: its stored row, decoded, with the secret's hash as bytes.</summary>
public sealed class AccessKey
{
    private readonly byte[] _secretSha256;

    private AccessKey(AccessKeyRow row, byte[] secretSha256)
    {
        Row = row;
        Scope = AccessScopes.FromStored(row.Scope);
        StoreIds = row.StoreIds.Length == 0
            ? FrozenSet<string>.Empty
            : row.StoreIds.Split(',').ToFrozenSet(StringComparer.Ordinal);
        _secretSha256 = secretSha256;
    }

    /// <summary>The stored row.</summary>
    public AccessKeyRow Row { get; }

    /// <summary>The public id.</summary>
    public string KeyId => Row.KeyId;

    /// <summary>The key's program; empty for operator keys.</summary>
    public string ProgramId => Row.ProgramId;

    /// <summary>What the key may do.</summary>
    public AccessScope Scope { get; }

    /// <summary>The stores a POS key may act for; empty for any store.</summary>
    public FrozenSet<string> StoreIds { get; }

    /// <summary>The key from its stored row.</summary>
    public static AccessKey From(AccessKeyRow row) => new(row, Convert.FromHexString(row.SecretSha256));

    /// <summary>Whether <paramref name="secret"/> is this key's, compared in constant time.</summary>
    public bool HasSecret(string secret)
    {
        Span<byte> utf8 = stackalloc byte[KeyTokens.SecretLength];
        Span<byte> hash = stackalloc byte[32];
        int length = Encoding.ASCII.GetBytes(secret, utf8);
        SHA256.HashData(utf8[..length], hash);
        return CryptographicOperations.FixedTimeEquals(hash, _secretSha256);
    }

    /// <summary>Why the key does not work at <paramref name="now"/>, or null when it does.</summary>
    public string? Unusable(DateTimeOffset now) =>
        Row.RevokedAt is not null ? "the key was revoked"
        : Row.ExpiresAt is { } expires && expires <= now ? "the key has expired"
        : null;
}
