using Microsoft.Extensions.Options;

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
    /// recorded in the ledger, and gives it back when not, in seconds. Far longer than a commit:
    /// a request still on its way to the ledger when the stock looks would have its unit given
    /// back and then spend it, selling it twice. A queued entry commits in one attempt or fails,
    /// so its way is bounded by the queue's wait and one batch's database timeouts; the least
    /// accepted, <see cref="StockClaimConfirmSecondsMin"/>, is several times those.
    /// </summary>
    public int StockClaimConfirmSeconds { get; set; } = 600;

    /// <summary>The least accepted <see cref="StockClaimConfirmSeconds"/>.</summary>
    public const int StockClaimConfirmSecondsMin = 120;

    /// <summary>How long a silo trusts its cached copy of a program's configuration, in milliseconds.</summary>
    public int ProgramCacheTtlMs { get; set; } = 2_000;

    /// <summary>The most transaction ids a member may be asked to remember (each costs 32 bytes in every member held).</summary>
    public const int RecentTransactionsMaxLimit = 1_024;

    /// <summary>
    /// What is wrong with the values, naming the setting, or null. A member remembering no
    /// transaction could not apply an entry at all, so a silo with one refuses to start.
    /// </summary>
    public string? Problem() =>
        SnapshotEveryEntries is < 1 or > 1_000_000 ? "Members:SnapshotEveryEntries must be 1..1000000"
        : SnapshotOnDeactivateMinEntries is < 0 or > 1_000_000 ? "Members:SnapshotOnDeactivateMinEntries must be 0..1000000"
        : RecentTransactionsMax is < 1 or > RecentTransactionsMaxLimit ? $"Members:RecentTransactionsMax must be 1..{RecentTransactionsMaxLimit}"
        : StockClaimConfirmSeconds is < StockClaimConfirmSecondsMin or > 604_800 ? $"Members:StockClaimConfirmSeconds must be {StockClaimConfirmSecondsMin}..604800"
        : ProgramCacheTtlMs is < 0 or > 600_000 ? "Members:ProgramCacheTtlMs must be 0..600000"
        : null;
}

/// <summary>Refuses member options out of range at the silo's start, naming the setting (see <see cref="MemberOptions.Problem"/>).</summary>
internal sealed class MemberOptionsValidation : IValidateOptions<MemberOptions>
{
    public ValidateOptionsResult Validate(string? name, MemberOptions options) =>
        options.Problem() is { } problem ? ValidateOptionsResult.Fail(problem) : ValidateOptionsResult.Success;
}
