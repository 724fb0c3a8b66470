namespace Loyalty;

/// <summary>
/// One member of one program, keyed by <see cref="LoyaltyIds.MemberKey"/>. It holds balance,
/// tier and referral links in memory; every change is a ledger entry committed before the call
/// returns.
/// </summary>
public interface IMemberGrain : IGrainWithStringKey
{
    /// <summary>Enrols the member; a resend of the same enrolment is answered as already enrolled.</summary>
    Task<EnrolmentResult> Enrol(Enrolment enrolment);

    /// <summary>
    /// Applies a purchase; answers only after its ledger entry is durable. A value task, awaited
    /// once: the hot path's state machine comes from a pool instead of a task per purchase.
    /// </summary>
    ValueTask<AccrualResult> Accrue(Purchase purchase);

    /// <summary>Reverses the points of (part of) an earlier purchase; answers only after the entry is durable.</summary>
    Task<ReturnResult> Return(PurchaseReturn purchaseReturn);

    /// <summary>Replaces the member's flags (e.g. "storecard"); flags named by the program's flag rules earn faster.</summary>
    Task<MemberResult> SetFlags(IReadOnlyList<string> flags);

    /// <summary>Starts or renews a paid membership on the retailer billing's confirmation of a payment; idempotent by the payment id.</summary>
    Task<MembershipResult> ConfirmMembershipPayment(MembershipPayment payment);

    /// <summary>Starts a plan's free trial, once per member and plan.</summary>
    Task<MembershipResult> StartMembershipTrial(string planId);

    /// <summary>Cancels the membership: it lapses when its term ends; a later payment renews it again.</summary>
    Task<MembershipResult> CancelMembership(string reason);

    /// <summary>Records an item handed in for trade-in credit, waiting for inspection; idempotent by the trade-in id.</summary>
    Task<TradeInResult> SubmitTradeIn(TradeIn tradeIn);

    /// <summary>
    /// Grades an item waiting for inspection: its credit (from the program's table) goes to the
    /// wallet, or nothing when rejected; once per trade-in. With <paramref name="storeId"/> (a till
    /// restricted to stores), only an item handed in at that store.
    /// </summary>
    Task<TradeInResult> InspectTradeIn(string tradeInId, TradeInCondition condition, string? storeId = null);

    /// <summary>Books a personal bonus day within the member's tier's allowance; idempotent by the booking id, and a day booked twice is booked once.</summary>
    Task<BonusDayResult> BookBonusDay(BonusDayBooking booking);

    /// <summary>Chooses the cause (from the program's list) the member's purchases give a share to; null stops giving (or falls back to the default cause).</summary>
    Task<MemberResult> ChooseCause(string? causeId);

    /// <summary>Replaces the flags, or adds and removes some against those held when the change applies.</summary>
    Task<MemberResult> ChangeFlags(FlagChange change);

    /// <summary>A manual adjustment by support staff; idempotent by its transaction id.</summary>
    Task<AccrualResult> Adjust(Adjustment adjustment);

    /// <summary>Records a survey answer, with the program's reward for answering; idempotent by its id.</summary>
    Task<AccrualResult> RecordFeedback(Feedback feedback);

    /// <summary>Spends points on a reward at once; idempotent by the transaction id.</summary>
    Task<RedemptionResult> Redeem(Redemption redemption);

    /// <summary>Holds points for a reward at a till until committed, cancelled or lapsed; idempotent by the reservation id.</summary>
    Task<RedemptionResult> Reserve(Redemption reservation);

    /// <summary>
    /// Spends the points a reservation holds; a repeat answers the same commit. With
    /// <paramref name="storeId"/> (a till restricted to stores), only a reservation made at that store.
    /// </summary>
    Task<RedemptionResult> CommitReservation(string reservationId, string? storeId = null);

    /// <summary>
    /// Frees the points a reservation holds; a repeat, or a cancel after it lapsed, is answered
    /// without a change. With <paramref name="storeId"/>, only a reservation made at that store.
    /// </summary>
    Task<RedemptionResult> CancelReservation(string reservationId, string? storeId = null);

    /// <summary>Does the member's due work (lapses, expiries, warnings) and schedules the next; called by the due scheduler.</summary>
    Task Wake();

    /// <summary>Replaces the member's profile fields (personal data, kept outside the ledger).</summary>
    Task<MemberResult> SetProfile(IReadOnlyDictionary<string, string> fields);

    /// <summary>Erases the member's personal data on request; ledger amounts stay (anonymised). Idempotent.</summary>
    Task<MemberResult> Erase(string reason);

    /// <summary>
    /// Merges the duplicate account <paramref name="duplicateId"/> into this one: its points, lots,
    /// pending points and return progress move here, the higher tier is kept, referral links are
    /// re-pointed, and the duplicate answers with a pointer to this member. Idempotent.
    /// </summary>
    Task<MemberResult> MergeFrom(string duplicateId, string reason);

    /// <summary>
    /// Leaves this account to <paramref name="survivorId"/>: records the transfer and empties it;
    /// repeated, answers the same transfer. Refused, leaving nothing, when the transfer would move
    /// more than <paramref name="survivorRoom"/>, what the survivor may still take in (its
    /// headroom under the engine's volume limit), so that a duplicate never lets go of points the
    /// survivor would then have to refuse.
    /// </summary>
    [ResponseTimeout(Limits.TwoMemberInnerStepTimeout)]
    Task<(MergeTransfer? Transfer, LoyaltyError Error, string? Message)> Detach(string survivorId, long survivorRoom);

    /// <summary>
    /// Why <see cref="Detach"/> would be refused now, without writing anything: the error and its
    /// message, or <see cref="LoyaltyError.None"/> when it would go ahead (a write-off of expired
    /// points first included). Asked before a survivor records a merge as started, so that a
    /// merge refused for the duplicate's reasons leaves nothing in either ledger.
    /// </summary>
    [ResponseTimeout(Limits.TwoMemberInnerStepTimeout)]
    Task<(LoyaltyError Error, string? Message)> CheckDetach(string survivorId, long survivorRoom);

    /// <summary>Replaces <paramref name="fromId"/> by <paramref name="toId"/> in this member's referral links (after a merge).</summary>
    [ResponseTimeout(Limits.TwoMemberInnerStepTimeout)]
    Task<LoyaltyError> Repoint(string fromId, string toId);

    /// <summary>The member, or null when not enrolled.</summary>
    Task<MemberView?> Get();

    /// <summary>What the purchase would earn now and what the member could then redeem, decided as <see cref="Accrue"/> would; writes nothing.</summary>
    Task<QuoteResult> Quote(Purchase purchase);

    /// <summary>The catalogue as the member sees it now (redeemable or why not); null when not enrolled.</summary>
    Task<RewardsView?> Rewards();

    /// <summary>The member's open reservations, soonest to lapse first; null when not enrolled.</summary>
    Task<IReadOnlyList<OpenReservation>?> Reservations();

    /// <summary>
    /// The member's transaction (purchase, return, adjustment, redemption, reservation, survey
    /// answer) by its id, with where it stands; null when the member or the id is unknown here.
    /// </summary>
    Task<TransactionView?> FindTransaction(string transactionId);

    /// <summary>
    /// A page of the ledger, newest first, of entries with a sequence below
    /// <paramref name="beforeSequence"/> (all when null); null when the member is not enrolled.
    /// </summary>
    /// <remarks>
    /// A member that absorbed duplicate accounts continues, after its own oldest entry, with each
    /// duplicate's history (in merge order, newest first): <paramref name="fromMember"/> names the
    /// duplicate a page continues in, as <see cref="LedgerPage.NextMember"/> said.
    /// </remarks>
    Task<LedgerPage?> GetLedger(long? beforeSequence, int pageSize, string? fromMember = null);

    /// <summary>Sets who referred this already enrolled member, by member id or referral code; once, and before its first qualifying purchase.</summary>
    Task<MemberResult> SetReferrer(string? referrerId, string? referralCode);

    /// <summary>
    /// Who referred this member, as the referral graph stands for cycle checks: the referrer, or
    /// whoever holds its account when it was merged away; null when nobody, when that is this
    /// member itself, or when not enrolled. The ledger's own link is <see cref="IMemberLinkSteps.GetLinks"/>.
    /// </summary>
    Task<string?> GetReferrer();

    /// <summary>The member's referral code, issued on first request; null when not enrolled.</summary>
    Task<string?> GetReferralCode();

    /// <summary>Credits (or with <paramref name="reverse"/>, takes back) the reward for referring <paramref name="referredMemberId"/>; idempotent.</summary>
    Task<LoyaltyError> SettleReferralReward(string referredMemberId, long points, bool reverse);
}

/// <summary>
/// The steps of changes that touch two members (referral links, merges). Only the program's
/// <see cref="IProgramLinksGrain"/> calls the steps that change a member, one change at a time;
/// clients call <see cref="IMemberGrain"/>, which hands such changes to it. The reads of links
/// are for members too.
/// </summary>
public interface IMemberLinkSteps : IGrainWithStringKey
{
    /// <summary>Enrols a member whose referrer is named (and resolved from a code, if one was given).</summary>
    [ResponseTimeout(Limits.TwoMemberStepTimeout)]
    Task<EnrolmentResult> EnrolReferred(Enrolment enrolment);

    /// <summary>Links this enrolled member to <paramref name="referrerId"/>, refusing cycles; see <see cref="IMemberGrain.SetReferrer"/>.</summary>
    [ResponseTimeout(Limits.TwoMemberStepTimeout)]
    Task<MemberResult> LinkReferrer(string referrerId);

    /// <summary>
    /// Records that this member referred <paramref name="referredMemberId"/>; idempotent. Refused,
    /// with the reason, when this member is not enrolled, is closed, or has reached a referral cap.
    /// </summary>
    [ResponseTimeout(Limits.TwoMemberInnerStepTimeout)]
    Task<MemberResult> AddReferral(string referredMemberId);

    /// <summary>
    /// Settles this referrer's unconfirmed link to <paramref name="referredMemberId"/>: it stands
    /// (<paramref name="stands"/>: the referred member's side is written) or is withdrawn;
    /// idempotent, nothing when the link is not unconfirmed. A withdrawal is made only once the
    /// change that made the link has ended (<paramref name="changeEnded"/>: it answered, other
    /// than UNAVAILABLE) or the link is older than the check's delay (a commit's outcome may be
    /// open for a while after UNAVAILABLE).
    /// </summary>
    [ResponseTimeout(Limits.TwoMemberInnerStepTimeout)]
    Task<MemberResult> SettleReferralLink(string referredMemberId, bool stands, bool changeEnded);

    /// <summary>Merges the duplicate into this member; see <see cref="IMemberGrain.MergeFrom"/>.</summary>
    [ResponseTimeout(Limits.TwoMemberStepTimeout)]
    Task<MemberResult> MergeDuplicate(string duplicateId, string reason);

    /// <summary>
    /// Abandons this member's open merge of <paramref name="duplicateId"/> (see
    /// <see cref="IProgramLinksGrain.CompleteMerge"/>) for <paramref name="why"/>, when the
    /// duplicate's ledger shows it never let go here; nothing otherwise. The desk's call, when the
    /// graph has changed since the merge was checked and completing it now would close a cycle.
    /// </summary>
    [ResponseTimeout(Limits.TwoMemberStepTimeout)]
    Task AbandonMerge(string duplicateId, string why);

    /// <summary>The member as the ledger has it (an activation that missed another's writes reloads first); null when not enrolled.</summary>
    Task<MemberView?> GetCommitted();

    /// <summary>
    /// Who referred this member and who it was merged into, as the ledger has them (an activation
    /// that missed another's writes reloads first); both null when not enrolled.
    /// </summary>
    Task<MemberLinks> GetLinks();

    /// <summary>
    /// Whether <paramref name="duplicateId"/>, which let go to this member, is still to be taken in
    /// here: this member is open and its ledger does not record that merge (through an earlier
    /// merge either). False once taken in, and for a member erased or merged away before it took
    /// the duplicate in (which it then never will).
    /// </summary>
    Task<bool> AwaitsMergeOf(string duplicateId);
}

/// <summary>
/// One per program, keyed by program id: the desk through which every change that touches two
/// members passes, one at a time, so that such changes are linearizable with respect to each other.
/// </summary>
public interface IProgramLinksGrain : IGrainWithStringKey
{
    /// <summary>Enrols a member with a referrer.</summary>
    Task<EnrolmentResult> Enrol(Enrolment enrolment);

    /// <summary>Gives an enrolled member its referrer.</summary>
    Task<MemberResult> SetReferrer(string memberId, string referrerId);

    /// <summary>Merges <paramref name="duplicateId"/> into <paramref name="survivorId"/>.</summary>
    Task<MemberResult> Merge(string survivorId, string duplicateId, string reason);

    /// <summary>
    /// Settles each unconfirmed referral link of <paramref name="referrerId"/> (see
    /// <see cref="MemberLinks.Unconfirmed"/>) against the referred member's ledger: kept when it
    /// names the referrer, withdrawn otherwise. The referrer's due schedule asks for it; the
    /// answer is <see cref="LoyaltyError.None"/> once none is left unsettled.
    /// </summary>
    Task<LoyaltyError> CheckReferralLinks(string referrerId);

    /// <summary>
    /// Completes the merge into <paramref name="survivorId"/> that was started and cut short (see
    /// <see cref="MemberLinks.MergingFrom"/>): the duplicate is taken in and its links moved, or the
    /// merge is abandoned when the duplicate refuses to let go. The survivor's due schedule asks
    /// for it; the answer is <see cref="LoyaltyError.None"/> once no merge into it is left open.
    /// </summary>
    Task<LoyaltyError> CompleteMerge(string survivorId);
}

/// <summary>
/// A referral code, keyed "program/code" (<see cref="ReferralCodes.Key"/>): which member of the
/// program it belongs to. Engines before codes were kept per program keyed a code by itself; such
/// a code of the same program is taken over at its first use.
/// </summary>
public interface IReferralCodeGrain : IGrainWithStringKey
{
    /// <summary>Gives the code to the member when it is free (or already theirs); false when another member holds it.</summary>
    Task<bool> Claim(ReferralOwner owner);

    /// <summary>The code's member, or null when the code was never issued.</summary>
    Task<ReferralOwner?> Resolve();

    /// <summary>Withdraws the code from its member (erasure); nothing happens when another member holds it.</summary>
    Task Release(ReferralOwner owner);
}

/// <summary>The stock of one reward, keyed "program/reward": units taken by redemptions and open reservations.</summary>
public interface IRewardStockGrain : IGrainWithStringKey
{
    /// <summary>
    /// Takes <paramref name="quantity"/> units for member <paramref name="memberId"/>'s ledger entry
    /// <paramref name="claimId"/> when no more than <paramref name="stock"/> would then be taken;
    /// false when out of stock. The same member's request repeated while its claim is open shares
    /// that claim and takes nothing more; another member's claim under the same id is its own.
    /// </summary>
    Task<bool> Take(string memberId, string claimId, int quantity, long stock);

    /// <summary>
    /// A request that took units under the claim ended known to have written nothing (refused, or a
    /// resend answered as a duplicate; not a commit whose outcome is unknown, which leaves the claim
    /// to be settled against the ledger after its confirm window). Once every request that took the
    /// claim has abandoned it, its units go back.
    /// </summary>
    Task Abandon(string memberId, string claimId);

    /// <summary>
    /// The member ended reservation <paramref name="claimId"/>: settled against the ledger at once,
    /// its units sold when it was committed, back when it was cancelled or lapsed. Without this
    /// call (a crash after the member's entry) the grain settles it itself after the lapse time.
    /// </summary>
    Task Settle(string memberId, string claimId);

    /// <summary>
    /// A full return gave back the units spent under <paramref name="claimId"/> at
    /// <paramref name="spentAt"/>; once per claim, and only for units the stock counted (spent
    /// once it was counting: a reward that was given a stock later counted none before).
    /// </summary>
    Task Return(string claimId, int quantity, DateTimeOffset spentAt);

    /// <summary>Units taken so far.</summary>
    Task<long> Taken();
}

/// <summary>One program (retailer) and its configuration, keyed by program id.</summary>
public interface IProgramGrain : IGrainWithStringKey
{
    /// <summary>Creates the program or replaces its settings, bumping the version.</summary>
    Task<ProgramConfig> Put(ProgramSettings settings);

    /// <summary>
    /// Creates or replaces the settings only when the program is at <paramref name="expectedVersion"/>
    /// (0: does not exist yet), or always when it is null; the check and the change are one step.
    /// </summary>
    Task<ProgramPut> PutIfVersion(ProgramSettings settings, long? expectedVersion);

    /// <summary>The configuration, or null when the program does not exist.</summary>
    Task<ProgramConfig?> Get();
}
