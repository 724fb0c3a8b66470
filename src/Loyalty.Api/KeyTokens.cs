using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace Loyalty.Api;

/// <summary>
/// The bearer token of a key: <c>lgk_</c>, the key's public id (16 hex digits), a dot, and the
/// secret (256 random bits, base64url). The id lets the gateway find the key without a search;
/// only the secret's SHA-256 is stored. The prefix makes leaked keys easy to find by scanners.
/// </summary>
public static class KeyTokens
{
    /// <summary>Every token starts with this.</summary>
    public const string Prefix = "lgk_";

    /// <summary>Hex digits of a key id.</summary>
    public const int KeyIdLength = 16;

    /// <summary>Random bytes of a secret (256 bits).</summary>
    public const int SecretBytes = 32;

    /// <summary>Characters of a secret: <see cref="SecretBytes"/> bytes in base64url without padding.</summary>
    public const int SecretLength = 43;

    /// <summary>A token's length; longer authorization values are refused before any parsing.</summary>
    public const int TokenLength = 4 + KeyIdLength + 1 + SecretLength;

    /// <summary>A new key id and secret from the system's cryptographic generator, and the token that joins them.</summary>
    public static (string KeyId, string Secret, string Token) New()
    {
        string keyId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(KeyIdLength / 2));
        string secret = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(SecretBytes));
        return (keyId, secret, Join(keyId, secret));
    }

    /// <summary>The token of a key id and secret.</summary>
    private static string Join(string keyId, string secret) => Prefix + keyId + "." + secret;

    /// <summary>Splits a token; false for anything that is not one (no detail: the caller answers UNAUTHENTICATED).</summary>
    public static bool TryParse(ReadOnlySpan<char> token, out string keyId, out string secret)
    {
        keyId = secret = "";
        if (token.Length != TokenLength || !token.StartsWith(Prefix, StringComparison.Ordinal) || token[Prefix.Length + KeyIdLength] != '.')
        {
            return false;
        }

        ReadOnlySpan<char> id = token.Slice(Prefix.Length, KeyIdLength);
        ReadOnlySpan<char> rest = token[(Prefix.Length + KeyIdLength + 1)..];
        if (!IsLowerHex(id) || !Base64Url.IsValid(rest, out int bytes) || bytes != SecretBytes)
        {
            return false;
        }

        keyId = id.ToString();
        secret = rest.ToString();
        return true;
    }

    /// <summary>The stored form of a secret: lower-case hex SHA-256 of its UTF-8 bytes.</summary>
    public static string Hash(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    private static bool IsLowerHex(ReadOnlySpan<char> value)
    {
        foreach (char c in value)
        {
            if (c is not (>= '0' and <= '9' or >= 'a' and <= 'f'))
            {
                return false;
            }
        }

        return true;
    }
}
