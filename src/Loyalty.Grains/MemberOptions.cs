namespace Loyalty.Grains;

/// <summary>Tuning of member grains. Bound from the <c>Members</c> configuration section.</summary>
public sealed class MemberOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Members";

    /// <summary>
    /// A snapshot is written once this many ledger entries have been applied since the last one,
    /// so activation replays at most about this many entries.
    /// </summary>
    public int SnapshotEveryEntries { get; set; } = 100;

    /// <summary>
    /// On deactivation, a snapshot is written only when at least this many entries were applied
    /// since the last one. A shorter tail is cheap to replay, and skipping it keeps a wave of idle
    /// members being deactivated together from turning into a wave of single-row writes.
    /// </summary>
    public int SnapshotOnDeactivateMinEntries { get; set; } = 20;

    /// <summary>
    /// How many of a member's newest transaction ids the grain remembers, so a resend is answered
    /// from memory. Older resends are still caught by the database's unique index.
    /// </summary>
    public int RecentTransactionsMax { get; set; } = 16;

    /// <summary>
    /// How long a reward's stock waits before it checks that a unit taken for a redemption was
    /// recorded in the ledger, and gives it back when not, in seconds. Far longer than a commit.
    /// </summary>
    public int StockClaimConfirmSeconds { get; set; } = 600;

    /// <summary>How long a silo trusts its cached copy of a program's configuration, in milliseconds.</summary>
    public int ProgramCacheTtlMs { get; set; } = 2_000;
}
