namespace Loyalty.Grains;

/// <summary>
/// What every decision reads: the member's committed state, its program's configuration and the
/// time. Deciders are pure functions of it and of the request: they return the entry to write,
/// or a refusal naming its reason, and change nothing. The grain applies what they return only
/// after it is committed (see <see cref="MemberState.Apply"/>).
/// </summary>
/// <param name="ProgramId">The member's program.</param>
/// <param name="MemberId">The member.</param>
/// <param name="State">The member's committed state (with any open commit group's changes applied).</param>
/// <param name="Program">The program's configuration now.</param>
/// <param name="Now">The time of the decision: the entry's recorded time.</param>
public readonly record struct Decider(string ProgramId, string MemberId, MemberState State, ProgramConfig Program, DateTimeOffset Now)
{
    /// <summary>The program's settings.</summary>
    public ProgramSettings Settings => Program.Settings;

    /// <summary>The member's next entry, with the envelope every kind shares; callers add the rest with <c>with</c>.</summary>
    public LedgerEntry NewEntry(LedgerEntryKind kind, Points points, string? txn, long fingerprint) =>
        new(ProgramId, MemberId, checked(State.Sequence + 1), kind, points, txn, fingerprint,
            null, 0, null, null, null, Now, Now, Program.Version);

    /// <summary>The refusal when the member takes no more changes: not enrolled, erased, or merged away; null when open.</summary>
    public Decision? Closed() => ClosedFor(ProgramId, MemberId, State);

    /// <summary>The message of a refusal for a member that is not enrolled.</summary>
    public string NotEnrolled => NotEnrolledIn(ProgramId, MemberId);

    /// <inheritdoc cref="Closed()"/>
    public static Decision? ClosedFor(string programId, string memberId, MemberState state) =>
        !state.Enrolled ? Decision.Refuse(LoyaltyError.NotFound, NotEnrolledIn(programId, memberId))
        : state.MergedInto is { } into ? Decision.Refuse(LoyaltyError.FailedPrecondition, $"member '{memberId}' was merged into '{into}'; use '{into}'")
        : state.Erased ? Decision.Refuse(LoyaltyError.FailedPrecondition, $"member '{memberId}' was erased")
        : null;

    /// <inheritdoc cref="NotEnrolled"/>
    public static string NotEnrolledIn(string programId, string memberId) => $"member '{memberId}' is not enrolled in program '{programId}'";

    /// <summary>When a lot that becomes spendable at <paramref name="availableAt"/> expires under the program's policy.</summary>
    public static DateTimeOffset? LotExpiry(ProgramSettings? settings, DateTimeOffset availableAt) =>
        settings is { Expiry: { Mode: not ExpiryMode.None } policy } ? policy.ExpiresAt(availableAt, settings.Zone) : null;
}

/// <summary>
/// What a decider returns: the entry to write, a refusal with its reason, or <see cref="Nothing"/>
/// when the request is already done (a resend, a link that exists) and needs no entry.
/// </summary>
/// <param name="Entry">The entry to write; null when refused or when nothing is to be written.</param>
/// <param name="Error">Why it was refused; <see cref="LoyaltyError.None"/> when an entry is written.</param>
/// <param name="Message">The refusal's message, naming the field or the state that refused it.</param>
public readonly record struct Decision(LedgerEntry? Entry, LoyaltyError Error, string? Message)
{
    /// <summary>Nothing to write: the request is already done, and is answered as a success.</summary>
    public static readonly Decision Nothing = new(null, LoyaltyError.None, null);

    /// <summary>Whether the request was refused.</summary>
    public bool Refused => Error != LoyaltyError.None;

    /// <summary>Whether the request needs no entry (it is already done).</summary>
    public bool Done => Entry is null && Error == LoyaltyError.None;

    /// <summary>Write <paramref name="entry"/>.</summary>
    public static Decision Write(LedgerEntry entry) => new(entry, LoyaltyError.None, null);

    /// <summary>Refuse, for <paramref name="error"/>: <paramref name="message"/>.</summary>
    public static Decision Refuse(LoyaltyError error, string message) => new(null, error, message);

    /// <summary>
    /// The decision as a grain stage answers it: <paramref name="entry"/> to write and null; no
    /// entry and the refusal made by <paramref name="reject"/>; or, when nothing is to be written,
    /// no entry and <paramref name="done"/> (which a decider that never answers Nothing may omit).
    /// </summary>
    public T? Staged<T>(out LedgerEntry? entry, Func<LoyaltyError, string, T> reject, Func<T>? done = null)
        where T : class
    {
        entry = Entry;
        return Refused ? reject(Error, Message!)
            : Done ? (done ?? throw new InvalidOperationException("The decision wrote nothing and its stage has no answer for that."))()
            : null;
    }
}
