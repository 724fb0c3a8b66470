namespace Loyalty.Storage;

/// <summary>The steps between a change's decision and its acknowledgement, where faults can be injected.</summary>
public enum FaultStep
{
    /// <summary>The entry's details are encoded for the database.</summary>
    Encode,

    /// <summary>The entry joins the silo's commit queue.</summary>
    Enqueue,

    /// <summary>The entry's batch is written to the database.</summary>
    Commit,

    /// <summary>The member grain has applied the entry to its state (before the commit).</summary>
    Apply,

    /// <summary>The entry is durable and the member grain is about to answer.</summary>
    Acknowledge,

    /// <summary>
    /// The member grain has marked when the member's next due work is, for the state the entry
    /// leaves (after applying it, before queuing it).
    /// </summary>
    Schedule,

    /// <summary>The member grain writes its snapshot (not a step of a change: the ledger stays the truth).</summary>
    Snapshot,

    /// <summary>
    /// The entry's batch is answered as failed, then written a moment later: a COMMIT whose
    /// connection was lost while the server went on. The change's outcome is unknown to the
    /// engine when it answers, and the entry is in the ledger soon after.
    /// </summary>
    LateCommit,
}

/// <summary>Thrown by an armed <see cref="FaultInjector"/>; never thrown otherwise.</summary>
public sealed class InjectedFaultException(FaultStep step, string what)
    : Exception($"Fault injected at {step} of {what}.")
{
    /// <summary>Where the fault was injected.</summary>
    public FaultStep Step { get; } = step;
}

/// <summary>
/// A seam for tests that prove a change is all or nothing: armed with a rule, it throws at the
/// chosen step for the chosen entries. Disarmed (always, in production) it costs one read of a
/// field per step. One per silo, registered with the ledger.
/// </summary>
public sealed class FaultInjector
{
    private volatile Func<FaultStep, LedgerEntry, bool>? _rule;
    private volatile Func<DueChange, bool>? _dueRule;
    private volatile Func<string, bool>? _programScheduleRule;
    private volatile Func<string, bool>? _snapshotRule;

    /// <summary>Whether a rule is armed.</summary>
    public bool Armed => _rule is not null || _dueRule is not null || _programScheduleRule is not null || _snapshotRule is not null;

    /// <summary>From now on, throws at every step and entry for which <paramref name="rule"/> answers true.</summary>
    public void Arm(Func<FaultStep, LedgerEntry, bool> rule) => _rule = rule;

    /// <summary>
    /// From now on, fails the commit of every batch that holds a due change for which
    /// <paramref name="rule"/> answers true (a due change may ride alone, or beside other
    /// members' entries, which then fail with it). The rule sees each due change of each batch.
    /// </summary>
    public void ArmDue(Func<DueChange, bool> rule) => _dueRule = rule;

    /// <summary>
    /// From now on, fails the scheduling of a program's every member (after a change of its expiry
    /// or birthday rules) whenever <paramref name="rule"/> answers true for the program's id.
    /// </summary>
    public void ArmProgramSchedule(Func<string, bool> rule) => _programScheduleRule = rule;

    /// <summary>From now on, fails every snapshot write of a member whose id <paramref name="rule"/> answers true for.</summary>
    public void ArmSnapshot(Func<string, bool> rule) => _snapshotRule = rule;

    /// <summary>How long after its failed answer a batch chosen at <see cref="FaultStep.LateCommit"/> is written.</summary>
    public TimeSpan LateCommitDelay { get; set; } = TimeSpan.FromMilliseconds(300);

    /// <summary>Stops injecting faults.</summary>
    public void Disarm()
    {
        _rule = null;
        _dueRule = null;
        _programScheduleRule = null;
        _snapshotRule = null;
    }

    /// <summary>Throws <see cref="InjectedFaultException"/> when the armed snapshot rule chooses this member's snapshot.</summary>
    public void AtSnapshot(string memberId)
    {
        if (_snapshotRule is { } rule && rule(memberId))
        {
            throw new InjectedFaultException(FaultStep.Snapshot, $"the snapshot of member {memberId}");
        }
    }

    /// <summary>Throws <see cref="InjectedFaultException"/> when the armed rule chooses this program's scheduling.</summary>
    public void AtProgramSchedule(string programId)
    {
        if (_programScheduleRule is { } rule && rule(programId))
        {
            throw new InjectedFaultException(FaultStep.Schedule, $"the scheduling of program {programId}'s members");
        }
    }

    /// <summary>Whether the armed rule chooses this step for any of <paramref name="entries"/> (the steps of a whole batch).</summary>
    public bool Chooses(FaultStep step, IReadOnlyList<LedgerEntry> entries)
    {
        if (_rule is not { } rule)
        {
            return false;
        }

        foreach (LedgerEntry entry in entries)
        {
            if (rule(step, entry))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Throws <see cref="InjectedFaultException"/> when the armed rule chooses this step and entry.</summary>
    public void At(FaultStep step, LedgerEntry entry)
    {
        if (_rule is { } rule && rule(step, entry))
        {
            throw new InjectedFaultException(step, $"entry {entry.Sequence}");
        }
    }

    /// <summary>Throws <see cref="InjectedFaultException"/> when the armed due rule chooses this due change at its commit.</summary>
    public void AtDue(DueChange due)
    {
        if (_dueRule is { } rule && rule(due))
        {
            throw new InjectedFaultException(FaultStep.Commit, $"the due change of {due.ProgramId}/{due.MemberId}");
        }
    }
}
