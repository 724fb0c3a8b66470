using Loyalty.Storage;

namespace Loyalty.Grains;

/// <summary>
/// Work by the clock: reservations that lapse, points that expire and warnings before they do.
/// The due scheduler wakes the member when its row in the due schedule comes due, whether or not
/// the grain was active; the grain writes one entry per piece of work and sets the next due time.
/// </summary>
public sealed partial class MemberGrain
{
    /// <summary>The most pieces of due work one wake does; the rest waits for the next wake, moments later.</summary>
    private const int WakeStepsMax = 16;


    /// <summary>How long a wake waits before it retries telling a referrer its reward after a failure.</summary>
    private static readonly TimeSpan SettlementRetryDelay = TimeSpan.FromMinutes(1);

    /// <inheritdoc />
    public async Task Wake()
    {
        // Caught up with the ledger, not only loaded: during a change of the cluster's membership
        // another activation of this member may have written meanwhile (a reservation's hold, say),
        // and a wake that found no work under a stale state would still set the exact due time,
        // later than the other activation's work.
        await CatchUpAsync();
        // The silo's copy of the program is refreshed first: wakes come in bulk right after a change
        // of the expiry or birthday rules (every member is brought due), and one decided on a copy
        // up to a cache's lifetime old would grant or warn under the rules just replaced.
        await _services.Programs.GetFreshAsync(_programId);
        bool settled = !_state.Referral.AnyOwed || await SettleReferrerAsync();
        DateTimeOffset now = MemberNow();
        // The desk's work for this member, each kind on its own time (see DeskDue). One that fails
        // stays in the state, and waits before it is asked for again, the longer the older it is.
        IProgramLinksGrain desk = GrainFactory.GetGrain<IProgramLinksGrain>(_programId);
        if (_state.LinkCheckAt is { } linkDue && linkDue <= now && !(RetryFor(LinkRetry, linkDue) > now))
        {
            LinkRetry = await DeskCheckAsync(() => desk.CheckReferralLinks(_memberId)) ? null : new DeskRetry(linkDue, RetryAt(linkDue, now));
        }

        if (_state.MergeCheckAt is { } mergeDue && mergeDue <= now && !(RetryFor(MergeRetry, mergeDue) > now))
        {
            MergeRetry = await DeskCheckAsync(() => desk.CompleteMerge(_memberId)) ? null : new DeskRetry(mergeDue, RetryAt(mergeDue, now));
        }

        for (int step = 0; step < WakeStepsMax; step++)
        {
            DueOutcome outcome = await WriteDueStepAsync(StageDue);
            if (outcome.Error == LoyaltyError.NotFound)
            {
                // The program is gone: nothing is due any more; the reschedule removes the row.
                break;
            }

            if (outcome.Error != LoyaltyError.None)
            {
                // Not done: the claim's lease runs out and the scheduler wakes the member again.
                throw new InvalidOperationException($"Due work of {_programId}/{_memberId} could not be written ({outcome.Error}).");
            }

            if (outcome.Entry is null)
            {
                break;
            }
        }

        await RescheduleAsync(settled);
    }

    /// <summary>The longest the desk's due work waits between tries.</summary>
    private static readonly TimeSpan DeskRetryMax = TimeSpan.FromHours(1);

    /// <summary>
    /// A failed try of desk work: the due time it was for, and when to try again. It holds only
    /// while that work is still the one due: a link confirmed by another path (a resent change)
    /// and a new one made since are due at another time, and are asked for then, not after the
    /// old one's back-off.
    /// </summary>
    private sealed record DeskRetry(DateTimeOffset Due, DateTimeOffset At);

    private static DateTimeOffset? RetryFor(DeskRetry? retry, DateTimeOffset due) => retry is { } r && r.Due == due ? r.At : null;

    /// <summary>
    /// When the desk's due work for this member (<see cref="MemberState.LinkCheckAt"/>,
    /// <see cref="MemberState.MergeCheckAt"/>) is next to be asked for, the earlier of the two
    /// kinds; null when there is none. Each kind not yet due is asked for when it falls due. One
    /// overdue was asked for and failed (the schedule was set to its time when the entry that made
    /// it was applied): it waits as a failed try in this activation said, or, when none did here
    /// (the member was deactivated since), as <see cref="RetryAt"/> says now, so that work that
    /// cannot be done (a member whose ledger cannot be read) does not take the program's desk
    /// every minute, across deactivations too.
    /// </summary>
    private DateTimeOffset? DeskDue(DateTimeOffset now) =>
        Earliest(KindDue(_state.LinkCheckAt, LinkRetry, now), KindDue(_state.MergeCheckAt, MergeRetry, now));

    private static DateTimeOffset? KindDue(DateTimeOffset? due, DeskRetry? retry, DateTimeOffset now) =>
        due is not { } at || at > now ? due : RetryFor(retry, at) ?? RetryAt(at, now);

    /// <summary>
    /// The next try of desk work due at <paramref name="due"/> and still not done at
    /// <paramref name="now"/>: half as long on as it has been overdue, at least
    /// <see cref="SettlementRetryDelay"/> and at most <see cref="DeskRetryMax"/>.
    /// </summary>
    private static DateTimeOffset RetryAt(DateTimeOffset due, DateTimeOffset now)
    {
        TimeSpan wait = (now - due) / 2;
        return now + (wait < SettlementRetryDelay ? SettlementRetryDelay : wait > DeskRetryMax ? DeskRetryMax : wait);
    }

    /// <summary>
    /// Has the program's desk do this member's due work: settle its unconfirmed referral links
    /// (a change that made one failed before the referred member's side was known to be written),
    /// or complete a merge into it that was cut short. False when it is not done (see <see cref="DeskDue"/>).
    /// </summary>
    private async Task<bool> DeskCheckAsync(Func<Task<LoyaltyError>> call)
    {
        try
        {
            return await CallBackAwaitedAsync(call()) == LoyaltyError.None;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false;
        }
    }

    /// <summary>
    /// Sets the member's due time to exactly its next due work, once every change in flight has
    /// settled (a change that failed to commit must not leave the schedule later than the truth).
    /// It goes through the commit queue, so a mark queued after it is never overwritten.
    /// </summary>
    private async Task RescheduleAsync(bool settled)
    {
        ProgramConfig? program;
        do
        {
            await EnsureLoadedAsync();
            // Fresh, not cached: a silo whose cache still holds an older expiry policy must not
            // reschedule (or drop) a member under it.
            program = await _services.Programs.GetFreshAsync(_programId);
            while (_inFlight > 0)
            {
                await Drained();
            }
        }
        while (!_valid || _inFlight > 0);

        // From here to queueing the change there is no await: nothing can be applied in between.
        DateTimeOffset? next = null;
        if (_state.Enrolled && program is not null)
        {
            DateTimeOffset now = MemberNow();
            _state.Lots.Mature(now);
            next = Earliest(Expiring.NextDue(_state, program.Settings.ExpiryRules, now, WakeLateBy), ProgrammeDue(program.Settings, now));
            if (!settled && next <= now)
            {
                // The referrer could not be told: retry later, not at once (other members' work comes first).
                next = now + SettlementRetryDelay;
            }

            next = Earliest(next, DeskDue(now));
        }

        // The due time rides in a batch with other members' entries, and goes with it when the
        // batch fails: the row may then still hold the claim's lease. So the time is known only
        // once the write has landed; until then every change marks its own due time rather than
        // skipping a mark it thinks made (a mark queued after this exact time can only bring it
        // forward).
        _scheduleKnown = false;
        try
        {
            await _services.Ledger.ScheduleAsync(new DueChange(_programId, _memberId, next, Exact: true));
        }
        catch
        {
            // A change's mark meanwhile may have set it known; the row's time is not known now.
            _scheduleKnown = false;
            throw;
        }

        // Landed: the row holds this time, or an earlier one that a change marked meanwhile.
        _scheduledDue = _scheduleKnown && _scheduledDue is { } marked && (next is null || marked < next) ? marked : next;
        _scheduleKnown = true;
        await RescheduleAgainIfTheRulesChangedAsync(program);
    }

    /// <summary>
    /// A change of the program's rules that moves when members are due brings every member due
    /// now, straight in the schedule (<c>ScheduleProgramAsync</c>). One that landed after this
    /// member read the program and before its exact time did was overwritten by a time computed
    /// under the old rules (or the row removed): the program is read again once the time has
    /// landed, and when it changed meanwhile the member is marked due now, so it wakes under the
    /// new rules. The program grain answers a read only after a change's scheduling, so a read
    /// that still sees the old version means the scheduling is still to come, after this write.
    /// </summary>
    private async Task RescheduleAgainIfTheRulesChangedAsync(ProgramConfig? used)
    {
        ProgramConfig? now = await _services.Programs.GetFreshAsync(_programId);
        if (now is null || now.Version == used?.Version || (used is not null && !ProgramGrain.DueChanged(used.Settings, now.Settings)))
        {
            // Unchanged, or changed in what does not move due times (those changes bring no one due).
            return;
        }

        DateTimeOffset due = MemberNow();
        try
        {
            await _services.Ledger.ScheduleAsync(new DueChange(_programId, _memberId, due, Exact: false));
        }
        catch
        {
            _scheduleKnown = false;
            throw;
        }

        // The row holds this time or an earlier one.
        _scheduledDue = due;
    }

    /// <summary>This member's offset in the spread of expiry wakes (see <see cref="Expiring.WakeLateBy"/>).</summary>
    private TimeSpan WakeLateBy => Expiring.WakeLateBy(_programId, _memberId, _services.ExpirySpread);

    private DueOutcome? StageDue(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        if (!_state.Enrolled)
        {
            return DueOutcome.Nothing;
        }

        // A closed account earns nothing new, but what runs out still ends. An erased member has
        // no birth month left (no birthday), and its tier is reviewed and its membership lapses as
        // anyone's. One merged away took its tier to the survivor (the reports count it gone); its
        // membership ended before the merge (the merge waits for its lapse), but one merged away by
        // an earlier version may have left its lapse unrecorded: only that is written on it.
        Decider at = At(program, now);
        Decision decision = Expiring.Next(_state, program.Settings.ExpiryRules, now) is { } work ? DueDecision.Of(at, work, EndSuffix, ReleaseFingerprint)
            : _state.MergedInto is not null ? DueDecision.Lapse(at) ?? Decision.Nothing
            : DueDecision.Programme(at);
        return decision.Staged(out entry, (e, _) => new DueOutcome(null, e), () => DueOutcome.Nothing);
    }

    /// <summary>
    /// Writes the next piece of the member's due work that <paramref name="stage"/> decides (all
    /// of it: <see cref="StageDue"/>); a reservation's lapse then has the reward's stock settle its
    /// units at once.
    /// </summary>
    private async Task<DueOutcome> WriteDueStepAsync(Stage<DueOutcome> stage)
    {
        DueOutcome outcome = await WriteDueAsync(stage);
        if (outcome.Entry is { Kind: LedgerEntryKind.ReservationEnd } entry && entry.DetailsAs<ReservationEndDetails>() is { RewardId: { } reward })
        {
            await SettleStockAsync(reward, entry.Reference!);
        }

        return outcome;
    }

    /// <summary>
    /// Runs a change that due work not yet written can hold up: refused with UNAVAILABLE while
    /// <paramref name="owed"/> says such work is there (its wake may be behind or failing), it
    /// writes that work now, as the wake would (at most <paramref name="stepsMax"/> steps of
    /// <paramref name="stage"/>, stopping when nothing is left to write), and runs the change once
    /// more, so the caller is not kept waiting for the schedule. A step that fails ends it with
    /// the first answer.
    /// </summary>
    private async Task<T> AfterOwedDueWorkAsync<T>(Func<Task<T>> change, Func<T, LoyaltyError> errorOf, Func<bool> owed, Stage<DueOutcome> stage, int stepsMax)
    {
        T result = await change();
        if (errorOf(result) != LoyaltyError.Unavailable || !owed())
        {
            return result;
        }

        for (int step = 0; step < stepsMax && owed(); step++)
        {
            DueOutcome written = await WriteDueStepAsync(stage);
            if (written.Error != LoyaltyError.None)
            {
                return result;
            }

            if (written.Entry is null)
            {
                break;
            }
        }

        return await change();
    }

    /// <summary>Writes the piece of due work <paramref name="stage"/> decides: its entry, nothing, or why it could not.</summary>
    private Task<DueOutcome> WriteDueAsync(Stage<DueOutcome> stage) =>
        WriteAsync(prefetch: null, stage, (entry, _, _) => new DueOutcome(entry, LoyaltyError.None), _ => Task.FromResult<DueOutcome?>(null), (e, _) => new DueOutcome(null, e));

    /// <summary>What one step of due work did: an entry, nothing left to do, or an error.</summary>
    private sealed record DueOutcome(LedgerEntry? Entry, LoyaltyError Error)
    {
        public static readonly DueOutcome Nothing = new(null, LoyaltyError.None);
    }
}
