namespace Loyalty.Grains;

/// <summary>
/// A member as its grain holds it in memory, and as it is snapshotted. It changes only through
/// <see cref="Apply"/>, used both for live changes and for replaying the ledger, so replay always
/// rebuilds exactly the state that was acknowledged.
/// </summary>
[GenerateSerializer]
public sealed class MemberState
{
    /// <summary>The tier every member starts in until the program defines a ladder.</summary>
    public const string DefaultTier = "standard";

    /// <summary>Sequence of the newest ledger entry applied.</summary>
    [Id(0)] public long Sequence { get; set; }

    /// <summary>Whether an enrolment entry has been applied.</summary>
    [Id(1)] public bool Enrolled { get; set; }

    /// <summary>Spendable points.</summary>
    [Id(2)] public Points Balance { get; set; }

    /// <summary>All points ever earned.</summary>
    [Id(3)] public Points LifetimeEarned { get; set; }

    /// <summary>The member's tier.</summary>
    [Id(4)] public string Tier { get; set; } = DefaultTier;

    /// <summary>Who referred this member, if anyone.</summary>
    [Id(5)] public string? ReferredBy { get; set; }

    /// <summary>Whom this member referred, oldest first.</summary>
    [Id(6)] public List<string> Referrals { get; set; } = [];

    /// <summary>When the member enrolled.</summary>
    [Id(7)] public DateTimeOffset EnrolledAt { get; set; }

    /// <summary>The newest transactions, oldest first, bounded by the grain's option.</summary>
    [Id(8)] public List<RecentTransaction> Recent { get; set; } = [];

    /// <summary>Applies one ledger entry. Throws when entries arrive out of order.</summary>
    public void Apply(LedgerEntry entry, int recentMax)
    {
        if (entry.Sequence <= Sequence)
        {
            throw new InvalidOperationException($"Ledger entry {entry.Sequence} applied after {Sequence}.");
        }

        Sequence = entry.Sequence;
        switch (entry.Kind)
        {
            case LedgerEntryKind.Enrol:
                Enrolled = true;
                EnrolledAt = entry.OccurredAt;
                ReferredBy = entry.Reference;
                break;
            case LedgerEntryKind.Earn:
                Balance += entry.Points;
                LifetimeEarned += entry.Points;
                break;
            case LedgerEntryKind.ReferralLink when entry.Reference is not null && !Referrals.Contains(entry.Reference):
                Referrals.Add(entry.Reference);
                break;
        }

        if (entry.TransactionId is not null)
        {
            Remember(new RecentTransaction(entry.TransactionId, entry.Fingerprint, entry.Points, entry.Sequence), recentMax);
        }
    }

    /// <summary>The remembered transaction with this id, or null.</summary>
    public RecentTransaction? FindRecent(string transactionId)
    {
        foreach (RecentTransaction t in Recent)
        {
            if (t.TransactionId == transactionId)
            {
                return t;
            }
        }

        return null;
    }

    /// <summary>A deep copy, for a snapshot that must not change while it is written.</summary>
    public MemberState Clone() => new()
    {
        Sequence = Sequence,
        Enrolled = Enrolled,
        Balance = Balance,
        LifetimeEarned = LifetimeEarned,
        Tier = Tier,
        ReferredBy = ReferredBy,
        Referrals = [.. Referrals],
        EnrolledAt = EnrolledAt,
        Recent = [.. Recent],
    };

    /// <summary>The member as queries see it.</summary>
    public MemberView ToView(string programId, string memberId) =>
        new(programId, memberId, Balance, Tier, ReferredBy, [.. Referrals], LifetimeEarned, EnrolledAt, Sequence);

    private void Remember(RecentTransaction transaction, int recentMax)
    {
        Recent.Add(transaction);
        if (Recent.Count > recentMax)
        {
            Recent.RemoveRange(0, Recent.Count - recentMax);
        }
    }
}

/// <summary>A transaction the member grain remembers, to answer a resend without the database.</summary>
[GenerateSerializer, Immutable]
public sealed record RecentTransaction(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] long Fingerprint,
    [property: Id(2)] Points Points,
    [property: Id(3)] long Sequence);
