namespace Loyalty;

/// <summary>
/// Thrown by a member grain whose state could not be loaded moments ago (its snapshot or ledger
/// could not be read, or its ledger holds an entry this version cannot read). The member logged
/// that failure once; callers answer UNAVAILABLE without logging it again, however often a client
/// retries.
/// </summary>
[GenerateSerializer]
public sealed class MemberUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public MemberUnavailableException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public MemberUnavailableException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause (not sent across grain calls; its message is in <paramref name="message"/>).</summary>
    public MemberUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
