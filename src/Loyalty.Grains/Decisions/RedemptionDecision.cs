namespace Loyalty.Grains;

/// <summary>
/// Redemption: whether the member may have a reward now and at what price (a birthday gift is one
/// unit free), a direct redeem or a reservation's hold, and a reservation's end (committed,
/// cancelled or lapsed). Points are spent soonest-expiring first; what is held by open
/// reservations is not available to anything else, so concurrent tills can never overdraw.
/// </summary>
public static class RedemptionDecision
{
    /// <summary>Whether the reward's stock was secured before the decision (rewards without stock need none).</summary>
    public enum Stock
    {
        /// <summary>The reward has no stock: nothing to take.</summary>
        Secured,

        /// <summary>The reward's units were taken from its stock for this request.</summary>
        Taken,

        /// <summary>The reward has no units left.</summary>
        OutOfStock,

        /// <summary>The stock could not be asked (a failure): nothing may be written, the client retries.</summary>
        Unknown,
    }

    /// <summary>
    /// Why the member cannot have the reward now, or null; <paramref name="points"/> is its price,
    /// less one unit when <paramref name="allowGift"/> and it is the member's open birthday gift (<paramref name="gift"/>).
    /// </summary>
    public static Decision? Affordability(in Decider d, Redemption request, bool allowGift, out long points, out bool gift)
    {
        points = 0;
        gift = false;
        MemberState state = d.State;
        if (d.Settings.FindReward(request.RewardId) is not { } reward)
        {
            return Decision.Refuse(LoyaltyError.NotFound, $"reward '{request.RewardId}' is not in the catalogue of program '{d.ProgramId}'");
        }

        TierLadder ladder = d.Settings.Ladder;
        (int tier, _) = Tiering.Review(ladder.IndexOf(state.Tier), state.TierReviewAt, ladder, state, d.Now);
        if (reward.Refusal(d.Now, ladder.Tiers[tier].Name, state.Membership.PlanAt(d.Now)) is { } refusal)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, refusal);
        }

        gift = allowGift && state.OpenBirthdayGift(d.Now)?.GiftRewardId == reward.Id;
        points = checked(reward.PointsPrice * (request.Quantity - (gift ? 1 : 0)));
        Points available = state.AvailableAt(d.Now);
        return available.Value < points
            ? Decision.Refuse(LoyaltyError.FailedPrecondition, $"the member has {available.Value} points available; {request.Quantity} x '{reward.Id}' needs {points}")
            : null;
    }

    /// <summary>A direct redeem (<paramref name="reserve"/> false) or a reservation's hold, or the refusal.</summary>
    public static Decision SpendOrHold(in Decider d, Redemption request, bool reserve, long fingerprint, Stock stock)
    {
        // A birthday gift is spent at once (a direct redeem or a basket's), never held by a reservation.
        if (Affordability(d, request, allowGift: !reserve, out long points, out bool gift) is { } refused)
        {
            return refused;
        }

        DateTimeOffset now = d.Now;
        if (reserve && d.State.Lots.Holds.Count >= Limits.OpenReservationsMax)
        {
            // Every hold the member keeps counts, also one past its lapse time whose end is not
            // written yet (the wake writes it): a backlogged schedule cannot make the list grow.
            int open = d.State.Lots.Holds.Count(h => h.LapsesAt > now);
            return open >= Limits.OpenReservationsMax
                ? Decision.Refuse(LoyaltyError.FailedPrecondition, $"the member already holds {Limits.OpenReservationsMax} open reservations")
                : Decision.Refuse(LoyaltyError.Unavailable, $"{d.State.Lots.Holds.Count - open} of the member's reservations have lapsed and their end is not recorded yet; nothing was recorded, retry");
        }

        if (stock is not (Stock.Secured or Stock.Taken))
        {
            return stock == Stock.OutOfStock
                ? Decision.Refuse(LoyaltyError.FailedPrecondition, OutOfStock(request.RewardId, request.Quantity, left: null))
                : Decision.Refuse(LoyaltyError.Unavailable, "the reward's stock could not be reserved; nothing was recorded, retry");
        }

        RewardValue value = ValueNow(d.Settings, d.Settings.FindReward(request.RewardId)!, request.Quantity);
        return Decision.Write(reserve
            ? d.NewEntry(LedgerEntryKind.Reserve, Points.Zero, request.TransactionId, fingerprint) with
            {
                StoreId = request.StoreId,
                AmountMinor = value.AmountMinor,
                Currency = value.Currency,
                Details = new ReserveDetails
                {
                    RewardId = request.RewardId,
                    Quantity = request.Quantity,
                    HeldPoints = points,
                    LapsesAt = now.AddSeconds(d.Settings.ReservationHoldSeconds),
                    Cause = value.Cause,
                },
            }
            : Valued(d.NewEntry(LedgerEntryKind.Redeem, new Points(-points), request.TransactionId, fingerprint) with
            {
                StoreId = request.StoreId,
                Details = new RedeemDetails
                {
                    RewardId = request.RewardId, Quantity = request.Quantity, BirthdayGift = gift, BirthdayGiftYear = gift ? d.State.BirthdayGrant!.Year : 0,
                    Lots = d.State.Lots.PlanDebit(points, unexpiredAt: now), StockTaken = stock == Stock.Taken,
                },
            }, value));
    }

    /// <summary>
    /// The end of the open reservation <paramref name="hold"/>: its commit (the points spent, unless
    /// it lapsed, or the points it may use no longer cover it), or its release (cancelled, or lapsed when
    /// its time has passed). <paramref name="key"/> and <paramref name="fingerprint"/> identify the end.
    /// </summary>
    public static Decision End(in Decider d, Hold hold, bool commit, string key, long fingerprint, string? storeId = null)
    {
        if (OtherStore($"reservation '{hold.ReservationId}' was made", hold.StoreId, storeId) is { } otherStore)
        {
            return Decision.Refuse(LoyaltyError.PermissionDenied, otherStore);
        }

        if (!commit)
        {
            return Decision.Write(d.NewEntry(LedgerEntryKind.ReservationEnd, Points.Zero, key, fingerprint) with
            {
                Reference = hold.ReservationId,
                Details = new ReservationEndDetails
                {
                    RewardId = hold.RewardId,
                    Quantity = hold.Quantity,
                    HeldPoints = hold.Points.Value,
                    EndedAs = hold.LapsesAt <= d.Now ? ReservationState.Lapsed : ReservationState.Cancelled,
                },
            });
        }

        if (hold.LapsesAt <= d.Now)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"reservation '{hold.ReservationId}' lapsed at {hold.LapsesAt:O}; nothing was spent");
        }

        // Unexpired points first, then points that expired since the hold was made; a support
        // adjustment may have taken some of them since.
        Points balance = d.State.Balance;
        if (balance.Value < hold.Points.Value)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"the balance ({balance.Value}) no longer covers the {hold.Points.Value} points reservation '{hold.ReservationId}' holds");
        }

        List<LotUse> lots = d.State.Lots.PlanCommit(hold, d.Now);
        long usable = lots.Sum(l => l.Points);
        if (usable < hold.Points.Value)
        {
            // The balance is enough, but part of it is points that had already expired when the
            // reservation was made, which it may never use; the rest was taken since (a support debit).
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"only {usable} of the balance's {balance.Value} points may meet the {hold.Points.Value} points reservation '{hold.ReservationId}' holds: "
                + $"the others had expired when it was made at {hold.MadeAt:O}");
        }

        // Valued as when it was made: the price the member was promised, also when the reward
        // has left the catalogue since.
        LedgerEntry redeem = d.NewEntry(LedgerEntryKind.Redeem, -hold.Points, key, fingerprint) with
        {
            Reference = hold.ReservationId,
            Details = new RedeemDetails { RewardId = hold.RewardId, Quantity = hold.Quantity, HeldPoints = hold.Points.Value, Lots = lots },
        };
        return Decision.Write(hold.Value is { } value ? Valued(redeem, value)
            : d.Settings.FindReward(hold.RewardId) is { } reward ? Valued(redeem, ValueNow(d.Settings, reward, hold.Quantity))
            : redeem);
    }

    /// <summary>
    /// Why <paramref name="quantity"/> units of the reward cannot be had: none left, or fewer than
    /// asked (<paramref name="left"/> when known; the stock answers only whether it had them all).
    /// </summary>
    public static string OutOfStock(string rewardId, int quantity, long? left) => left switch
    {
        <= 0 => $"reward '{rewardId}' is out of stock",
        { } some => $"reward '{rewardId}' has {some} units left in stock; {quantity} were asked for",
        null when quantity == 1 => $"reward '{rewardId}' is out of stock",
        null => $"reward '{rewardId}' has fewer than the {quantity} units asked for left in stock",
    };

    /// <summary>What <paramref name="quantity"/> units of <paramref name="reward"/> stand for by the catalogue of now.</summary>
    private static RewardValue ValueNow(ProgramSettings settings, Reward reward, int quantity) =>
        new(reward.ValueOf(quantity), settings.Currency, reward.Kind == RewardKind.Donation ? reward.Cause : null);

    /// <summary>A redemption with the money its units stand for and, for a donation, its cause.</summary>
    private static LedgerEntry Valued(LedgerEntry redeem, RewardValue value) => redeem with
    {
        AmountMinor = value.AmountMinor,
        Currency = value.Currency,
        Details = redeem.DetailsAs<RedeemDetails>()! with { Cause = value.Cause },
    };

    /// <summary>
    /// Why a till restricted to <paramref name="storeId"/> (null for one that is not) may not act on
    /// <paramref name="what"/>, made at <paramref name="madeAt"/>: it is another store's, or no
    /// store's (made by a key not restricted to stores, such as the web shop's, or before stores
    /// were kept: a key that is not restricted acts on those); null when it may.
    /// </summary>
    public static string? OtherStore(string what, string? madeAt, string? storeId) =>
        storeId is null || string.Equals(madeAt, storeId, StringComparison.Ordinal) ? null
        : madeAt is null ? $"{what} without a store; a key restricted to stores acts only on its own stores' (this call's store_id is '{storeId}')"
        : $"{what} at store '{madeAt}'; a key restricted to stores acts only on its own stores' (this call's store_id is '{storeId}')";
}
