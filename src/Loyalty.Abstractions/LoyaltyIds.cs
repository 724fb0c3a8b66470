namespace Loyalty;

/// <summary>Validation of identifiers and the composition of grain keys from them.</summary>
public static class LoyaltyIds
{
    /// <summary>
    /// Returns null when <paramref name="value"/> is a valid id, otherwise a message naming
    /// <paramref name="field"/>. Ids are 1..64 characters of [A-Za-z0-9._:-]; the slash is
    /// excluded because it separates program and member in grain keys.
    /// </summary>
    public static string? Check(string? value, string field, int lengthMax = Limits.IdLengthMax)
    {
        if (string.IsNullOrEmpty(value))
        {
            return $"{field} is required";
        }

        if (value.Length > lengthMax)
        {
            return $"{field} is longer than {lengthMax} characters";
        }

        foreach (char c in value)
        {
            if (!IsIdChar(c))
            {
                return $"{field} may contain only letters, digits and . _ : -";
            }
        }

        return null;
    }

    /// <summary>
    /// Whether <paramref name="value"/> is a valid id; allocates nothing, so hot paths check first
    /// and build the message (with its field name) only for a refusal.
    /// </summary>
    public static bool IsValid(string? value, int lengthMax = Limits.IdLengthMax)
    {
        if (string.IsNullOrEmpty(value) || value.Length > lengthMax)
        {
            return false;
        }

        foreach (char c in value)
        {
            if (!IsIdChar(c))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The member grain's key: program id and member id joined by a slash.</summary>
    public static string MemberKey(string programId, string memberId) => programId + "/" + memberId;

    /// <summary>Splits a member grain key back into program id and member id.</summary>
    public static (string ProgramId, string MemberId) SplitMemberKey(string key)
    {
        int slash = key.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || slash == key.Length - 1)
        {
            throw new ArgumentException($"'{key}' is not a member key (program/member).", nameof(key));
        }

        return (key[..slash], key[(slash + 1)..]);
    }

    private static bool IsIdChar(char c) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '.' or '_' or ':' or '-';
}
