namespace Loyalty;

/// <summary>What a reward gives the member.</summary>
public enum RewardKind
{
    /// <summary>Money off at the till (<see cref="Reward.ValueMinor"/>).</summary>
    Discount = 1,

    /// <summary>A free product (<see cref="Reward.Sku"/>).</summary>
    Product = 2,

    /// <summary>Points turned into a donation of <see cref="Reward.ValueMinor"/> to a named cause.</summary>
    Donation = 3,
}

/// <summary>One entry of a program's rewards catalogue.</summary>
[GenerateSerializer, Immutable]
public sealed record Reward(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] RewardKind Kind,
    [property: Id(3)] long PointsPrice,
    [property: Id(4)] long ValueMinor = 0,
    [property: Id(5)] string? Sku = null,
    [property: Id(6)] string? Cause = null,
    [property: Id(7)] IReadOnlyList<string>? Tiers = null,
    [property: Id(8)] DateTimeOffset? AvailableFrom = null,
    [property: Id(9)] DateTimeOffset? AvailableUntil = null,
    [property: Id(10)] long? Stock = null,
    [property: Id(11)] IReadOnlyList<string>? Plans = null)
{
    /// <summary>Membership plans whose members alone may redeem it; empty means everyone.</summary>
    public IReadOnlyList<string> PlanList => Plans ?? [];

    /// <summary>The key of the grain that counts a reward's units taken: program and reward.</summary>
    public static string StockKey(string programId, string rewardId) => programId + "/" + rewardId;

    /// <summary>The money of <paramref name="quantity"/> units (the discount, product value or donation); checked.</summary>
    public long ValueOf(int quantity) => checked(ValueMinor * quantity);

    /// <summary>Tiers allowed to redeem it, never null; empty means every tier.</summary>
    public IReadOnlyList<string> TierList => Tiers ?? [];

    /// <summary>
    /// Whether it can be redeemed at <paramref name="now"/> by a member in <paramref name="tier"/>
    /// holding membership plan <paramref name="plan"/> (null for none); otherwise why not.
    /// </summary>
    public string? Refusal(DateTimeOffset now, string tier, string? plan)
    {
        if (PlanList.Count > 0 && (plan is null || !PlanList.Contains(plan)))
        {
            return $"reward '{Id}' is for members of plans {string.Join(", ", PlanList)}";
        }

        if ((AvailableFrom is { } from && now < from) || (AvailableUntil is { } until && now >= until))
        {
            return $"reward '{Id}' is not available now";
        }

        return TierList.Count > 0 && !TierList.Contains(tier)
            ? $"reward '{Id}' is for tiers {string.Join(", ", TierList)}; the member is {tier}"
            : null;
    }

    /// <summary>Returns null when the reward is valid, otherwise a message naming the field under <paramref name="field"/>.</summary>
    public string? Check(string field)
    {
        string? error = LoyaltyIds.Check(Id, field + ".id", Limits.CodeLengthMax);
        if (error is not null)
        {
            return error;
        }

        if (FreeText.Check(Name, field + ".name", Limits.NameLengthMax) is { } nameError)
        {
            return nameError;
        }

        if (PointsPrice is < 1 or > Limits.BonusPointsMax)
        {
            return $"{field}.points_price must be 1..{Limits.BonusPointsMax}";
        }

        string? kindError = Kind switch
        {
            RewardKind.Discount => ValueMinor is < 1 or > Limits.PurchaseAmountMinorMax ? $"{field}.value_minor must be 1..{Limits.PurchaseAmountMinorMax} for a discount" : null,
            RewardKind.Product => LoyaltyIds.Check(Sku, field + ".sku", Limits.CodeLengthMax)
                ?? (ValueMinor is < 0 or > Limits.PurchaseAmountMinorMax ? $"{field}.value_minor must be 0..{Limits.PurchaseAmountMinorMax} for a product (its shelf value, 0 when not given)" : null),
            RewardKind.Donation => FreeText.Check(Cause, field + ".cause", Limits.NameLengthMax) is { } causeError
                ? causeError + " (a donation names its cause)"
                : ValueMinor is < 0 or > Limits.PurchaseAmountMinorMax ? $"{field}.value_minor must be 0..{Limits.PurchaseAmountMinorMax}" : null,
            _ => $"{field}.kind must be DISCOUNT, PRODUCT or DONATION",
        };
        if (kindError is not null)
        {
            return kindError;
        }

        if (TierList.Count > Limits.TiersMax || TierList.Any(t => LoyaltyIds.Check(t, field + ".tiers", Limits.CodeLengthMax) is not null))
        {
            return $"{field}.tiers must be at most {Limits.TiersMax} tier names";
        }

        if (AvailableFrom is { } from && AvailableUntil is { } until && until <= from)
        {
            return $"{field} needs available_from before available_until";
        }

        return Stock is < 0 or > Limits.BonusPointsMax ? $"{field}.stock must be 0..{Limits.BonusPointsMax} (unset for unlimited)" : null;
    }
}

/// <summary>
/// A redemption at the till or online: a reward and a quantity. Used for a direct redeem (the
/// transaction id is its idempotency key) and for a reservation (the transaction id is the
/// reservation id).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record Redemption(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] string RewardId,
    [property: Id(2)] int Quantity,
    [property: Id(3)] string? StoreId = null)
{
    /// <summary>Returns null when the request is well-formed, otherwise a message naming the field.</summary>
    public string? Check(string idField = "transaction_id") =>
        LoyaltyIds.Check(TransactionId, idField)
        ?? LoyaltyIds.Check(RewardId, "reward_id", Limits.CodeLengthMax)
        ?? (StoreId is null ? null : LoyaltyIds.Check(StoreId, "store_id"))
        ?? (Quantity is < 1 or > Limits.RedeemQuantityMax ? $"quantity must be 1..{Limits.RedeemQuantityMax}" : null);

    /// <summary>
    /// The content fingerprint; a resend must match it to count as the same request. A
    /// reservation's differs from a direct redeem's of the same reward: a redeem sent under a
    /// reservation's id (or the other way round) is another request, not a resend, and answering
    /// it as one would hand out a reward that nothing paid for. A direct redeem's is what it was
    /// before reservations were told apart, so its resends across an upgrade still match.
    /// </summary>
    public long ComputeFingerprint(bool reservation)
    {
        var f = new Fingerprint();
        f.Add(RewardId);
        f.Add(Quantity);
        f.Add(StoreId);
        if (reservation)
        {
            f.Add(ReservationMark);
        }

        return f.Value;
    }

    /// <summary>What a reservation's fingerprint adds to a redeem's.</summary>
    private const string ReservationMark = "reservation";
}

/// <summary>Where a reservation stands.</summary>
public enum ReservationState
{
    /// <summary>Not a reservation (a direct redeem).</summary>
    None = 0,

    /// <summary>Points are held until the reservation lapses.</summary>
    Held = 1,

    /// <summary>Committed: the held points were spent.</summary>
    Committed = 2,

    /// <summary>Cancelled by the till: the points are free again.</summary>
    Cancelled = 3,

    /// <summary>Neither committed nor cancelled in time: the points are free again.</summary>
    Lapsed = 4,
}

/// <summary>The engine's answer to a redeem, a reservation, its commit or its cancel.</summary>
[GenerateSerializer, Immutable]
public sealed record RedemptionResult(
    [property: Id(0)] string TransactionId,
    [property: Id(1)] AccrualStatus Status,
    [property: Id(2)] Points Points,
    [property: Id(3)] Points Balance,
    [property: Id(4)] Points Available,
    [property: Id(5)] long Sequence,
    [property: Id(6)] string? RewardId,
    [property: Id(7)] int Quantity,
    [property: Id(8)] ReservationState Reservation,
    [property: Id(9)] DateTimeOffset? LapsesAt,
    [property: Id(10)] IReadOnlyList<LotUse> Lots,
    [property: Id(11)] LoyaltyError Error,
    [property: Id(12)] string? ErrorMessage) : IChangeOutcome
{
    /// <summary>A refusal with the reason.</summary>
    public static RedemptionResult Reject(string transactionId, LoyaltyError error, string message) =>
        new(transactionId, AccrualStatus.Rejected, Points.Zero, Points.Zero, Points.Zero, 0, null, 0, ReservationState.None, null, [], error, message);
}
