namespace Loyalty.Grains;

public sealed partial class MemberGrain
{
    /// <summary>
    /// What an activation needs only now and then: a failed load, the desk's work and retries, a
    /// referral code asked for, a return's seed, a profile change, a warning once logged. Made at
    /// the first such need, so that each member held that only earns pays one reference for them
    /// instead of about 90 bytes of empty fields (a million members held: about 85 MiB).
    /// </summary>
    private sealed class SeldomFields
    {
        public (Exception Error, long At)? LoadFailed { get; set; }

        public IGrainTimer? EndAfterFailure { get; set; }

        public DeskRetry? LinkRetry { get; set; }

        public DeskRetry? MergeRetry { get; set; }

        public SemaphoreSlim? ProfileChanges { get; set; }

        public string? ReferralCode { get; set; }

        public TwoMemberHold? HeldBy { get; set; }

        public ReturnProgress? ReturnSeed { get; set; }

        public long DeskEpochSeen { get; set; }

        public bool TimeAheadLogged { get; set; }

        public long? UnknownOutcomeAt { get; set; }
    }

    private SeldomFields? _seldom;

    /// <summary>Stores one of the seldom fields: a default value, while the activation has none of them, makes no object.</summary>
    private void KeepSeldom<T>(T value, Action<SeldomFields, T> store)
    {
        if (_seldom is not null || !EqualityComparer<T>.Default.Equals(value, default!))
        {
            store(_seldom ??= new SeldomFields(), value);
        }
    }

    /// <summary>The last load's failure and when it happened (a <see cref="System.Diagnostics.Stopwatch"/> timestamp; see <see cref="LoadRetryDelay"/>).</summary>
    private (Exception Error, long At)? LoadFailed { get => _seldom?.LoadFailed; set => KeepSeldom(value, static (s, v) => s.LoadFailed = v); }

    /// <summary>The timer that ends an activation whose load failed (see <see cref="EndAfterFailedLoadAsync"/>).</summary>
    private IGrainTimer? EndAfterFailure { get => _seldom?.EndAfterFailure; set => KeepSeldom(value, static (s, v) => s.EndAfterFailure = v); }

    /// <summary>
    /// When this activation may ask the desk again for the member's link check, after a try that
    /// failed; null when none failed here (see <see cref="DeskDue"/>).
    /// </summary>
    private DeskRetry? LinkRetry { get => _seldom?.LinkRetry; set => KeepSeldom(value, static (s, v) => s.LinkRetry = v); }

    /// <summary>As <see cref="LinkRetry"/>, for the member's open merge.</summary>
    private DeskRetry? MergeRetry { get => _seldom?.MergeRetry; set => KeepSeldom(value, static (s, v) => s.MergeRetry = v); }

    /// <summary>
    /// One profile change at a time, from its ledger note to its row: two at once would commit
    /// their notes in one order and could upsert their rows in the other, leaving the row with
    /// the fields of the change the ledger has first. Made at the first change (most members
    /// never have one).
    /// </summary>
    private SemaphoreSlim? ProfileChanges { get => _seldom?.ProfileChanges; set => KeepSeldom(value, static (s, v) => s.ProfileChanges = v); }

    /// <summary>The member's referral code, once asked for and found free (see <see cref="GetReferralCode"/>).</summary>
    private string? ReferralCode { get => _seldom?.ReferralCode; set => KeepSeldom(value, static (s, v) => s.ReferralCode = v); }

    /// <summary>
    /// Set while a change that touches another member is made here (see <see cref="WhileHeldAsync"/>):
    /// a referral link, or a merge into this member. The member's other changes wait for it before
    /// they decide (those it lets through aside), so what the change checked here still holds when
    /// its own entry is decided, after the other member's side.
    /// </summary>
    private TwoMemberHold? HeldBy { get => _seldom?.HeldBy; set => KeepSeldom(value, static (s, v) => s.HeldBy = v); }

    /// <summary>
    /// The progress a return's stage made from the ledger for a purchase whose complete progress
    /// the member does not keep; handed from the stage to <see cref="ApplyDecided"/> within one turn of the write loop
    /// (<see cref="DecideAndApply"/> clears it before each decision), never across an await.
    /// </summary>
    private ReturnProgress? ReturnSeed { get => _seldom?.ReturnSeed; set => KeepSeldom(value, static (s, v) => s.ReturnSeed = v); }

    /// <summary>The newest desk epoch a call here has run under (see <see cref="DeskEpoch"/>).</summary>
    private long DeskEpochSeen { get => _seldom?.DeskEpochSeen ?? 0; set => KeepSeldom(value, static (s, v) => s.DeskEpochSeen = v); }

    /// <summary>When (a <see cref="System.Diagnostics.Stopwatch"/> timestamp) a commit of this member last failed with its outcome unknown (see <see cref="UnknownOutcomeWindow"/>).</summary>
    private long? UnknownOutcomeAt { get => _seldom?.UnknownOutcomeAt; set => KeepSeldom(value, static (s, v) => s.UnknownOutcomeAt = v); }

    /// <summary>Whether this activation logged that the member's time is held at <see cref="MemberTimeAheadMax"/>.</summary>
    private bool TimeAheadLogged { get => _seldom?.TimeAheadLogged ?? false; set => KeepSeldom(value, static (s, v) => s.TimeAheadLogged = v); }
}
