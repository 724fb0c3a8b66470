namespace Loyalty.Grains;

/// <summary>
/// Redemption: a direct redeem, and the till's reserve, commit and cancel. The grain is the
/// member's single writer and decides each of them without an await between the balance check
/// and applying the entry, so concurrent redemptions from many tills can never overdraw.
/// </summary>
public sealed partial class MemberGrain
{
    /// <summary>
    /// The transaction id of the entry that ends a reservation (commit, cancel or lapse). One id
    /// for all three: the ledger's unique index lets a reservation end only once, on any silo.
    /// '#' cannot occur in a client's id.
    /// </summary>
    internal const string EndSuffix = "#end";

    /// <summary>Fingerprints of the two ways a reservation ends, to tell them apart in the ledger.</summary>
    private const long CommitFingerprint = 1;

    private const long ReleaseFingerprint = 2;

    /// <inheritdoc />
    public Task<RedemptionResult> Redeem(Redemption redemption) => SpendOrHoldAsync(redemption, reserve: false);

    /// <inheritdoc />
    /// <remarks>
    /// Refused because the member's reservations are taken partly by holds past their lapse time
    /// whose end the wake has not written yet, it writes them first (see <see cref="AfterOwedDueWorkAsync"/>).
    /// </remarks>
    public Task<RedemptionResult> Reserve(Redemption reservation) =>
        AfterOwedDueWorkAsync(() => SpendOrHoldAsync(reservation, reserve: true), static r => r.Error, HasLapsedHold, StageDue, LapsedHoldsWrittenMax);

    /// <summary>Due steps a reservation writes at most before it is decided again (the holds' lapses, and what falls due before them).</summary>
    private const int LapsedHoldsWrittenMax = 2 * Limits.OpenReservationsMax;

    private bool HasLapsedHold()
    {
        DateTimeOffset now = MemberNow();
        IReadOnlyList<Hold> holds = _state.Lots.Holds;
        for (int i = 0; i < holds.Count; i++)
        {
            if (holds[i].LapsesAt <= now)
            {
                return true;
            }
        }

        return false;
    }

    /// <inheritdoc />
    public Task<RedemptionResult> CommitReservation(string reservationId, string? storeId = null) => EndReservationAsync(reservationId, commit: true, storeId);

    /// <inheritdoc />
    public Task<RedemptionResult> CancelReservation(string reservationId, string? storeId = null) => EndReservationAsync(reservationId, commit: false, storeId);

    private async Task<RedemptionResult> SpendOrHoldAsync(Redemption request, bool reserve)
    {
        string txn = request.TransactionId;
        if (request.Check(reserve ? "reservation_id" : "transaction_id") is { } error)
        {
            return RedemptionResult.Reject(txn, LoyaltyError.InvalidArgument, error);
        }

        long fingerprint = request.ComputeFingerprint(reserve);
        var stock = new StockTake();
        // For a resend (one indexed read, on resends only): a reservation's end, or the redeem itself,
        // so that the answer says what the first one did (the reward, its quantity, the lots spent).
        LedgerEntry? ended = null;
        RedemptionResult result = await WriteAsync(
            prefetch: async () =>
            {
                await TakeStockAsync(request, reserve, stock);
                ended = _state.FindRecent(txn) is null ? null : reserve ? await FindEndOfResentAsync(txn) : await FindCommittedAsync(txn);
            },
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageSpendOrHold(request, reserve, fingerprint, stock, ended, program, now, out entry),
            (entry, balance, _) => Answer(entry, balance, reserve ? ReservationState.Held : ReservationState.None),
            async existing =>
            {
                ended = reserve ? await FindEndOfResentAsync(txn) : existing;
                if (!await TrySettleForReadAsync())
                {
                    return RedemptionResult.Reject(txn, LoyaltyError.Unavailable, HeldUnread);
                }

                return await AnswerFromLedger(existing, txn, fingerprint, (t, p, s) => Duplicate(t, p, s, reserve, ended), (e, m) => RedemptionResult.Reject(txn, e, m),
                    kind: reserve ? LedgerEntryKind.Reserve : LedgerEntryKind.Redeem);
            },
            (e, m) => RedemptionResult.Reject(txn, e, m),
            resendId: txn);
        if (stock.Taken && WroteNothing(result.Status, result.Error, result.ErrorMessage))
        {
            await AbandonStockAsync(request);
        }

        return result;
    }

    private async Task<RedemptionResult> EndReservationAsync(string reservationId, bool commit, string? storeId)
    {
        if (LoyaltyIds.Check(reservationId, "reservation_id") is { } error)
        {
            return RedemptionResult.Reject(reservationId, LoyaltyError.InvalidArgument, error);
        }

        string key = reservationId + EndSuffix;
        long fingerprint = commit ? CommitFingerprint : ReleaseFingerprint;
        LedgerEntry? ended = null, reserved = null;
        RedemptionResult result = await WriteAsync(
            prefetch: async () =>
            {
                ended = reserved = null;
                if (_state.Lots.FindHold(reservationId) is null)
                {
                    ended = await FindCommittedAsync(key);
                    // For a key restricted to stores, the answer about an ended reservation is
                    // given only at the store it was made at, as the ending itself was.
                    reserved = storeId is null ? null : await FindCommittedAsync(reservationId);
                }
            },
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageEnd(reservationId, commit, storeId, ended, reserved, program, now, out entry),
            (entry, balance, _) => Answer(entry, balance, commit ? ReservationState.Committed : entry.DetailsAs<ReservationEndDetails>()!.EndedAs) with { TransactionId = reservationId },
            existing => Task.FromResult<RedemptionResult?>(AnswerEnded(reservationId, existing, commit)),
            (e, m) => RedemptionResult.Reject(reservationId, e, m));
        // A resend settles too: the first ending's call to the stock may have failed, and its units
        // would then wait for the stock's own settling, after the reservation's lapse time.
        if (result.Status is AccrualStatus.Accepted or AccrualStatus.Duplicate && result.RewardId is { } reward)
        {
            await SettleStockAsync(reward, reservationId);
        }

        return result;
    }

    /// <summary>
    /// How a resent reservation ended, when its hold is no longer open (one indexed read, on such
    /// resends only): the answer then says committed, cancelled or lapsed, not that nothing is held.
    /// </summary>
    private async Task<LedgerEntry?> FindEndOfResentAsync(string reservationId) =>
        _state.Lots.FindHold(reservationId) is null ? await FindCommittedAsync(reservationId + EndSuffix) : null;

    private RedemptionResult? StageSpendOrHold(Redemption request, bool reserve, long fingerprint, StockTake stock, LedgerEntry? ended, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = request.TransactionId;
        // A reservation made before its fingerprint was told from a redeem's has a redeem's; its
        // open hold tells it apart (the ledger's paths compare the entry's kind).
        if (!reserve && _state.Lots.FindHold(txn) is not null)
        {
            return RedemptionResult.Reject(txn, LoyaltyError.AlreadyExists, $"transaction_id '{txn}' is an open reservation's; commit it instead");
        }

        if (Precheck(txn, fingerprint, (t, p, s) => Duplicate(t, p, s, reserve, ended), (e, m) => RedemptionResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        RedemptionDecision.Stock secured = stock.Taken ? RedemptionDecision.Stock.Taken
            : program.Settings.FindReward(request.RewardId)?.Stock is null ? RedemptionDecision.Stock.Secured
            : stock.OutOfStock ? RedemptionDecision.Stock.OutOfStock : RedemptionDecision.Stock.Unknown;
        if (secured == RedemptionDecision.Stock.Unknown && !stock.AskedAgain
            && RedemptionDecision.Affordability(At(program, now), request, allowGift: !reserve, out _, out _) is null)
        {
            // The stock was not asked: when the prefetch looked, the member could not have the
            // reward (points maturing since, a credit or a cancel landing in between), or the
            // reward had no stock in this silo's copy of the program. Asked again once, not
            // refused as UNAVAILABLE.
            stock.AskedAgain = true;
            throw new StalePrefetchException();
        }

        return RedemptionDecision.SpendOrHold(At(program, now), request, reserve, fingerprint, secured)
            .Staged(out entry, (e, m) => RedemptionResult.Reject(txn, e, m));
    }

    private RedemptionResult? StageEnd(string reservationId, bool commit, string? storeId, LedgerEntry? ended, LedgerEntry? reserved, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string key = reservationId + EndSuffix;
        if (!_state.Enrolled)
        {
            return RedemptionResult.Reject(reservationId, LoyaltyError.NotFound, NotEnrolledMessage());
        }

        if (_state.Lots.FindHold(reservationId) is not { } hold)
        {
            if (reserved is { Kind: LedgerEntryKind.Reserve } && IsOwn(reserved)
                && RedemptionDecision.OtherStore($"reservation '{reservationId}' was made", reserved.StoreId, storeId) is { } otherStore)
            {
                return RedemptionResult.Reject(reservationId, LoyaltyError.PermissionDenied, otherStore);
            }

            return ended is not null && IsOwn(ended) ? AnswerEnded(reservationId, ended, commit)
                // Remembered by hash: only an ending's own fingerprint makes it this reservation's ending.
                : _state.FindRecent(key) is { Fingerprint: ReleaseFingerprint or CommitFingerprint } prior ? AnswerEnded(reservationId, prior.Points.Value < 0, prior.Points, prior.Sequence, commit)
                // A closed account holds no reservation: the till is told why (and where the member went).
                : Closed() is { } closed ? RedemptionResult.Reject(reservationId, closed.Error, closed.ErrorMessage!)
                : RedemptionResult.Reject(reservationId, LoyaltyError.NotFound, $"member '{_memberId}' has no reservation '{reservationId}'");
        }

        return RedemptionDecision.End(At(program, now), hold, commit, key, commit ? CommitFingerprint : ReleaseFingerprint, storeId)
            .Staged(out entry, (e, m) => RedemptionResult.Reject(reservationId, e, m));
    }

    private RedemptionResult Answer(LedgerEntry entry, Points balance, ReservationState reservation)
    {
        (Points points, string? reward, int quantity, DateTimeOffset? lapsesAt, IReadOnlyList<LotUse>? lots) = entry.Details switch
        {
            RedeemDetails spent => (-entry.Points, spent.RewardId, spent.Quantity, null, spent.Lots),
            ReserveDetails hold => (new Points(hold.HeldPoints), hold.RewardId, hold.Quantity, hold.LapsesAt, null),
            ReservationEndDetails end => (new Points(end.HeldPoints), end.RewardId, end.Quantity, (DateTimeOffset?)null, (IReadOnlyList<LotUse>?)null),
            _ => throw new InvalidOperationException($"Entry {entry.Sequence} ({entry.Kind}) is not a redemption's."),
        };
        return new RedemptionResult(entry.TransactionId!, AccrualStatus.Accepted, points, balance, _state.AvailableAt(MemberNow()), entry.Sequence,
            reward, quantity, reservation, lapsesAt, lots ?? [], LoyaltyError.None, null);
    }

    /// <summary>
    /// A resend of a redeem or a reservation. A reservation's answer says where it stands: held
    /// (or lapsed) while its hold is open, else as <paramref name="ended"/> records its end.
    /// </summary>
    private RedemptionResult Duplicate(string txn, Points points, long sequence, bool reserve, LedgerEntry? ended)
    {
        DateTimeOffset now = MemberNow();
        var answer = new RedemptionResult(txn, AccrualStatus.Duplicate, -points, _state.Balance, _state.AvailableAt(now), sequence,
            null, 0, ReservationState.None, null, [], LoyaltyError.None, null);
        if (!reserve)
        {
            return ended is { Details: RedeemDetails spent } && IsOwn(ended)
                ? answer with { RewardId = spent.RewardId, Quantity = spent.Quantity, Lots = spent.Lots ?? [] }
                : answer;
        }

        if (_state.Lots.FindHold(txn) is { } hold)
        {
            return answer with
            {
                Points = hold.Points, RewardId = hold.RewardId, Quantity = hold.Quantity, LapsesAt = hold.LapsesAt,
                Reservation = hold.LapsesAt > now ? ReservationState.Held : ReservationState.Lapsed,
            };
        }

        return ended is not null && IsOwn(ended) && EndedReward(ended) is { } reward
            ? answer with { Points = reward.Held, RewardId = reward.RewardId, Quantity = reward.Quantity, Reservation = EndedState(ended) }
            : answer with { Points = Points.Zero };
    }

    /// <summary>How a reservation's ending entry ended it.</summary>
    private static ReservationState EndedState(LedgerEntry ended) =>
        ended.Kind == LedgerEntryKind.Redeem ? ReservationState.Committed : (ended.Details as ReservationEndDetails)?.EndedAs ?? ReservationState.Cancelled;

    /// <summary>What a reservation held, from the entry that ended it: spent when committed, else released.</summary>
    private static (Points Held, string? RewardId, int Quantity)? EndedReward(LedgerEntry ended) => ended.Details switch
    {
        ReservationEndDetails released => (new Points(released.HeldPoints), released.RewardId, released.Quantity),
        RedeemDetails spent => (-ended.Points, spent.RewardId, spent.Quantity),
        _ => null,
    };

    /// <summary>
    /// The answer when the reservation has already ended, as the ledger records it: what the first
    /// commit or cancel answered (the points held, the reward, its quantity, the lots spent).
    /// </summary>
    private RedemptionResult AnswerEnded(string reservationId, LedgerEntry ended, bool commit)
    {
        RedemptionResult answer = AnswerEnded(reservationId, ended.Kind == LedgerEntryKind.Redeem, ended.Points, ended.Sequence, commit,
            (ended.Details as ReservationEndDetails)?.EndedAs ?? ReservationState.Cancelled);
        return answer.Error != LoyaltyError.None || EndedReward(ended) is not { } reward ? answer
            : answer with
            {
                Points = reward.Held, RewardId = reward.RewardId, Quantity = reward.Quantity,
                Lots = (ended.Details as RedeemDetails)?.Lots ?? [],
            };
    }

    private RedemptionResult AnswerEnded(string reservationId, bool committed, Points points, long sequence, bool commit, ReservationState endedAs = ReservationState.Cancelled)
    {
        ReservationState state = committed ? ReservationState.Committed : endedAs;
        if (committed != commit)
        {
            return RedemptionResult.Reject(reservationId, LoyaltyError.FailedPrecondition,
                $"reservation '{reservationId}' was already {(committed ? "committed" : "cancelled or lapsed")}");
        }

        return new RedemptionResult(reservationId, AccrualStatus.Duplicate, -points, _state.Balance, _state.AvailableAt(MemberNow()),
            sequence, null, 0, state, null, [], LoyaltyError.None, null);
    }

    /// <summary>
    /// Takes the reward's stock before the decision, when the reward has stock and the member
    /// plausibly can have it, as the decision will judge it: a reservation cannot be paid with the
    /// birthday gift, so one that only the gift would pay for takes no unit from other members.
    /// </summary>
    private async Task TakeStockAsync(Redemption request, bool reserve, StockTake stock)
    {
        // Points that became spendable since the last change count, as they will in the decision.
        _state.Lots.Mature(MemberNow());
        if (stock.Taken || stock.OutOfStock || !_state.Enrolled || _state.Erased || _state.MergedInto is not null || _state.FindRecent(request.TransactionId) is not null
            || await _services.Programs.GetAsync(_programId) is not { } program
            || program.Settings.FindReward(request.RewardId) is not { Stock: { } units }
            || RedemptionDecision.Affordability(At(program, MemberNow()), request, allowGift: !reserve, out _, out _) is not null)
        {
            return;
        }

        try
        {
            stock.Taken = await Stock(request.RewardId).Take(_memberId, request.TransactionId, request.Quantity, units);
            stock.OutOfStock = !stock.Taken;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Not known whether units were taken: the request is answered as not secured (nothing
            // written, retry), and a claim taken without its answer is settled by the stock
            // itself after its confirm window. Not abandoned from here: a resend of this request
            // in flight may share the claim, and its units must stay until the ledger shows it.
            // Not asked again either: the stock that failed now would most likely fail again.
            stock.AskedAgain = true;
            LogStockNotTaken(_services.Logger, e, _programId, _memberId, request.RewardId);
        }
    }

    /// <summary>
    /// Whether a request that took units is known to have written no entry, so that they can go
    /// back at once. Not after a commit the ledger did not confirm (<see cref="NotCommitted"/>):
    /// it may still land (a COMMIT the server finishes after the connection dropped), and the
    /// stock, settling at once, would not see its entry yet and sell the units again. Such a
    /// claim is settled by the stock itself after its confirm window, from what the ledger then
    /// holds. Every other refusal, UNAVAILABLE ones included, is decided before anything is sent.
    /// </summary>
    private static bool WroteNothing(AccrualStatus status, LoyaltyError error, string? message) =>
        status != AccrualStatus.Accepted && !(error == LoyaltyError.Unavailable && message == NotCommitted);

    /// <summary>
    /// Tells the stock that a request which took units wrote no entry. The answer stands whatever
    /// happens here: a call that fails leaves the claim to the stock's own settling.
    /// </summary>
    private Task AbandonStockAsync(Redemption request) =>
        TellStockAsync(request.RewardId, stock => stock.Abandon(_memberId, request.TransactionId));

    /// <summary>After a reservation ended: committed, its units are sold; cancelled or lapsed, they go back (see <see cref="AbandonStockAsync"/>).</summary>
    private Task SettleStockAsync(string rewardId, string reservationId) =>
        TellStockedAsync(rewardId, stock => stock.Settle(_memberId, reservationId));

    /// <summary>Tells the reward's stock, when the reward has one (see <see cref="AbandonStockAsync"/>).</summary>
    private async Task TellStockedAsync(string rewardId, Func<IRewardStockGrain, Task> tell)
    {
        if (await _services.Programs.GetAsync(_programId) is { } program && program.Settings.FindReward(rewardId) is { Stock: not null })
        {
            await TellStockAsync(rewardId, tell);
        }
    }

    private async Task TellStockAsync(string rewardId, Func<IRewardStockGrain, Task> tell)
    {
        try
        {
            await tell(Stock(rewardId));
        }
        catch (Exception e)
        {
            LogStockNotTold(_services.Logger, e, _programId, _memberId, rewardId);
        }
    }

    private IRewardStockGrain Stock(string rewardId) => GrainFactory.GetGrain<IRewardStockGrain>(Reward.StockKey(_programId, rewardId));

    /// <summary>Whether this request holds units of the reward's stock.</summary>
    private sealed class StockTake
    {
        public bool Taken { get; set; }

        public bool OutOfStock { get; set; }

        /// <summary>The decision found the stock not asked and had the prefetch ask again (once).</summary>
        public bool AskedAgain { get; set; }
    }
}
