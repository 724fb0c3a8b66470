namespace Loyalty.Grains;

/// <summary>
/// What a till or an app asks before or after a change, answered from the member as committed and
/// writing nothing: an earn preview, the rewards within reach, open reservations, a transaction by id.
/// </summary>
public sealed partial class MemberGrain
{
    /// <summary>
    /// The transaction id a quote is decided under. '#' cannot occur in a client's id, so it is
    /// never remembered and never matches a recorded purchase.
    /// </summary>
    private const string QuoteTransactionId = "quote#";

    /// <inheritdoc />
    public async Task<QuoteResult> Quote(Purchase purchase)
    {
        if ((purchase.Check(_services.Clock.GetUtcNow()) ?? CheckRouting(purchase.ProgramId, purchase.MemberId)) is { } error)
        {
            return QuoteResult.Reject(LoyaltyError.InvalidArgument, error);
        }

        if (await _services.Programs.GetAsync(_programId) is not { } program)
        {
            return QuoteResult.Reject(LoyaltyError.NotFound, $"program '{_programId}' not found");
        }

        IReadOnlyDictionary<string, long> taken = await StockTakenAsync(program.Settings);
        await SettleForReadAsync();
        program = await KnowingTierAfterAwaitsAsync(program);
        return DecideQuote(purchase with { TransactionId = QuoteTransactionId }, program, taken, MemberNow());
    }

    /// <summary>The purchase decided as Accrue would decide it now (every check, overflow included), and never applied.</summary>
    private QuoteResult DecideQuote(Purchase purchase, ProgramConfig program, IReadOnlyDictionary<string, long> taken, DateTimeOffset now)
    {
        _state.Lots.Mature(now);
        LedgerEntry? entry = null, before = null;
        if (Decide(new PurchaseWrite(this, purchase, fingerprint: 0), program, now, ref entry, ref before, out AccrualResult? refused) is { } overflow)
        {
            return QuoteResult.Reject(LoyaltyError.InvalidArgument, overflow);
        }

        if (entry is null)
        {
            return QuoteResult.Reject(refused!.Error, refused.ErrorMessage!);
        }

        // A review due and not written yet comes before the earn (see StageAccrual): the pair is
        // checked as Accrue checks it, and the earn already starts from the reviewed tier.
        if (Headroom.Refuse(_state, before ?? entry, before is null ? null : entry) is { } tooLarge)
        {
            return QuoteResult.Reject(tooLarge.Error, tooLarge.Message);
        }

        Points available = _state.AvailableAt(now);
        Points after = entry.AvailableAt is null ? available + entry.Points : available;
        Points redeemed = Points.Zero;
        bool giftSpent = false;
        if (purchase.RedeemRewardId is { } rewardId)
        {
            var redemption = new Redemption(QuoteTransactionId, rewardId, Math.Max(1, purchase.RedeemQuantity), purchase.StoreId);
            if (QuoteRedemption(redemption, program, taken, now, out redeemed, out giftSpent) is { } refusal)
            {
                return QuoteResult.Reject(refusal.Error, $"the purchase's redemption: {refusal.Message}");
            }

            after -= redeemed;
        }

        string? gift = giftSpent ? null : _state.OpenBirthdayGift(now)?.GiftRewardId;
        IReadOnlyList<RewardOption> options = RewardChoice.Options(program.Settings.RewardList, entry.DetailsAs<EarnDetails>()?.TierAfter ?? _state.Tier, after.Value, now, taken, gift, _state.Membership.PlanAt(now));
        return new QuoteResult(LoyaltyError.None, null, entry.Points, entry.Details, entry.AvailableAt,
            _state.Balance, available, _state.Lots.PendingTotal, after, redeemed, options, program.Version);
    }

    /// <summary>Whether the basket's redemption would be accepted (stock judged by the units taken now), and its points.</summary>
    private (LoyaltyError Error, string Message)? QuoteRedemption(Redemption redemption, ProgramConfig program, IReadOnlyDictionary<string, long> taken, DateTimeOffset now, out Points points, out bool gift)
    {
        // The purchase's checks covered the reward id and quantity.
        points = Points.Zero;
        if (RedemptionDecision.Affordability(At(program, now), redemption, allowGift: true, out long price, out gift) is { } refusal)
        {
            return (refusal.Error, refusal.Message!);
        }

        if (program.Settings.FindReward(redemption.RewardId)!.Stock is { } stock && stock - taken.GetValueOrDefault(redemption.RewardId) is var left && left < redemption.Quantity)
        {
            return (LoyaltyError.FailedPrecondition, RedemptionDecision.OutOfStock(redemption.RewardId, redemption.Quantity, left));
        }

        points = new Points(price);
        return null;
    }

    /// <inheritdoc />
    public async Task<RewardsView?> Rewards()
    {
        await SettleForReadAsync();
        if (!_state.Enrolled || await _services.Programs.GetAsync(_programId) is not { } program)
        {
            return null;
        }

        IReadOnlyDictionary<string, long> taken = await StockTakenAsync(program.Settings);

        // The awaits above let other changes start: settle again, then answer without an await.
        await SettleForReadAsync();
        program = await KnowingTierAfterAwaitsAsync(program);
        DateTimeOffset now = MemberNow();
        _state.Lots.Mature(now);
        TierLadder ladder = program.Settings.Ladder;
        (int tier, _) = Tiering.Review(ladder.IndexOf(_state.Tier), _state.TierReviewAt, ladder, _state, now);
        Points available = _state.AvailableAt(now);
        string tierName = ladder.Tiers[tier].Name;
        return new RewardsView(tierName, available, RewardChoice.Options(program.Settings.RewardList, tierName, available.Value, now, taken, _state.OpenBirthdayGift(now)?.GiftRewardId, _state.Membership.PlanAt(now)));
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<OpenReservation>?> Reservations()
    {
        await SettleForReadAsync();
        if (!_state.Enrolled)
        {
            return null;
        }

        DateTimeOffset now = MemberNow();
        return [.. _state.Lots.Holds.Where(h => h.LapsesAt > now).OrderBy(h => h.LapsesAt)
            .Select(h => new OpenReservation(h.ReservationId, h.RewardId, h.Quantity, h.Points, h.LapsesAt))];
    }

    /// <inheritdoc />
    public async Task<TransactionView?> FindTransaction(string transactionId)
    {
        await SettleForReadAsync();
        if (!_state.Enrolled || LoyaltyIds.Check(transactionId, "transaction_id") is not null)
        {
            return null;
        }

        LedgerEntry? entry = await FindCommittedAsync(transactionId);
        LedgerEntry? ended = entry?.Kind == LedgerEntryKind.Reserve ? await FindCommittedAsync(transactionId + EndSuffix) : null;

        // A purchase's returns, from the ledger (one indexed read): the member keeps only its most recent ones' progress.
        IReadOnlyList<LedgerEntry> returns = entry?.Kind == LedgerEntryKind.Earn
            ? await _services.Store.ReadReturnsOfAsync(_programId, transactionId, CancellationToken.None) : [];

        // The awaits above let other changes start: settle again, then answer without an await.
        await SettleForReadAsync();
        if (entry is null || !IsOwn(entry))
        {
            return null;
        }

        return entry.Kind switch
        {
            LedgerEntryKind.Earn => new TransactionView(entry, Reversal.Status(entry, ReturnProgress.Of(entry, returns)), ReservationState.None),
            LedgerEntryKind.Reserve => new TransactionView(ended is { Kind: LedgerEntryKind.Redeem } ? ended : entry, null, ReservationStateOf(ended, entry)),
            _ => new TransactionView(entry, null, ReservationState.None),
        };
    }

    private ReservationState ReservationStateOf(LedgerEntry? ended, LedgerEntry reserve) => ended switch
    {
        not null => EndedState(ended),
        null when _state.Lots.FindHold(reserve.TransactionId!) is { } hold => hold.LapsesAt > MemberNow() ? ReservationState.Held : ReservationState.Lapsed,
        _ => ReservationState.Lapsed,
    };

    /// <summary>Units taken of each reward with stock (one call per such reward, at most the catalogue's bound).</summary>
    private async Task<IReadOnlyDictionary<string, long>> StockTakenAsync(ProgramSettings settings)
    {
        Reward[] stocked = [.. settings.RewardList.Where(r => r.Stock is not null)];
        if (stocked.Length == 0)
        {
            return new Dictionary<string, long>();
        }

        long[] taken = await Task.WhenAll(stocked.Select(r => Stock(r.Id).Taken()));
        return stocked.Select((r, i) => (r.Id, taken[i])).ToDictionary(x => x.Id, x => x.Item2, StringComparer.Ordinal);
    }

    /// <summary>
    /// Whether a ledger entry found by its request id (which is unique per program, not per member)
    /// is this member's own, or one of a member merged into it: only then may it answer here.
    /// </summary>
    private bool IsOwn(LedgerEntry entry) => entry.MemberId == _memberId || _state.MergedFrom.Contains(entry.MemberId);
}
