namespace Loyalty;

/// <summary>What stops a member from redeeming a reward now, in the order it is checked.</summary>
public enum RewardBlock
{
    /// <summary>Redeemable now.</summary>
    None = 0,

    /// <summary>The member's tier is not among the reward's tiers.</summary>
    Tier = 1,

    /// <summary>Before the reward's window opens.</summary>
    NotYet = 2,

    /// <summary>The reward's window has closed.</summary>
    Ended = 3,

    /// <summary>No units left.</summary>
    OutOfStock = 4,

    /// <summary>Not enough available points for one unit.</summary>
    Points = 5,

    /// <summary>The reward is reserved to members of membership plans the member does not hold.</summary>
    Plan = 6,
}

/// <summary>One reward of the catalogue as one member sees it at one moment.</summary>
/// <param name="Reward">The catalogue entry.</param>
/// <param name="Block">The first thing that stops the member; <see cref="RewardBlock.None"/> when redeemable.</param>
/// <param name="Reason">The reason in words (as a redemption would be refused); null when redeemable.</param>
/// <param name="PointsShort">Points still needed for one unit; 0 when affordable.</param>
/// <param name="MaxUnits">Units the available points pay for, at most the stock left and a redemption's limit.</param>
/// <param name="StockLeft">Units left of a reward with stock; null for unlimited.</param>
[GenerateSerializer, Immutable]
public sealed record RewardOption(
    [property: Id(0)] Reward Reward,
    [property: Id(1)] RewardBlock Block,
    [property: Id(2)] string? Reason,
    [property: Id(3)] long PointsShort,
    [property: Id(4)] int MaxUnits,
    [property: Id(5)] long? StockLeft);

/// <summary>The catalogue as a member sees it now.</summary>
/// <param name="Tier">The member's tier (a review due now applied).</param>
/// <param name="Available">The points the options are judged against: balance less held, less points past their expiry (as <see cref="MemberView.Available"/>).</param>
/// <param name="Options">Every reward of the catalogue, in catalogue order.</param>
[GenerateSerializer, Immutable]
public sealed record RewardsView(
    [property: Id(0)] string Tier,
    [property: Id(1)] Points Available,
    [property: Id(2)] IReadOnlyList<RewardOption> Options);

/// <summary>What a purchase would earn now and what the member could then redeem; nothing is written.</summary>
/// <param name="Error">Why no quote could be made (the purchase would be refused for it).</param>
/// <param name="ErrorMessage">The reason in words.</param>
/// <param name="Points">The points the purchase would earn.</param>
/// <param name="Details">How they are made up, with the tier before and after.</param>
/// <param name="AvailableAt">When they would be spendable; null when at once.</param>
/// <param name="Balance">The spendable balance now.</param>
/// <param name="Available">The points the member can spend now (as <see cref="MemberView.Available"/>).</param>
/// <param name="Pending">The pending points now.</param>
/// <param name="AvailableAfter">Available points after the purchase (its points only if spendable at once), less its redemption.</param>
/// <param name="Redeemed">Points the purchase's redemption would spend.</param>
/// <param name="Rewards">The catalogue judged against <paramref name="AvailableAfter"/>.</param>
/// <param name="ProgramVersion">The program version the quote was decided under.</param>
[GenerateSerializer, Immutable]
public sealed record QuoteResult(
    [property: Id(0)] LoyaltyError Error,
    [property: Id(1)] string? ErrorMessage,
    [property: Id(2)] Points Points = default,
    [property: Id(3)] EntryDetails? Details = null,
    [property: Id(4)] DateTimeOffset? AvailableAt = null,
    [property: Id(5)] Points Balance = default,
    [property: Id(6)] Points Available = default,
    [property: Id(7)] Points Pending = default,
    [property: Id(8)] Points AvailableAfter = default,
    [property: Id(9)] Points Redeemed = default,
    [property: Id(10)] IReadOnlyList<RewardOption>? Rewards = null,
    [property: Id(11)] long ProgramVersion = 0)
{
    /// <summary>A refusal with the reason.</summary>
    public static QuoteResult Reject(LoyaltyError error, string message) => new(error, message);
}

/// <summary>An open reservation of a member.</summary>
[GenerateSerializer, Immutable]
public sealed record OpenReservation(
    [property: Id(0)] string ReservationId,
    [property: Id(1)] string RewardId,
    [property: Id(2)] int Quantity,
    [property: Id(3)] Points Points,
    [property: Id(4)] DateTimeOffset LapsesAt);

/// <summary>Units of one line of a purchase bought and returned so far.</summary>
[GenerateSerializer, Immutable]
public sealed record LineStatus(
    [property: Id(0)] string Sku,
    [property: Id(1)] long Quantity,
    [property: Id(2)] long ReturnedQuantity);

/// <summary>How much of a purchase has been returned and what is left.</summary>
/// <param name="ReturnedMinor">Money refunded so far.</param>
/// <param name="ReturnableMinor">Money left to return.</param>
/// <param name="ReversedPoints">Points the returns took back so far.</param>
/// <param name="ReversiblePoints">Points of the purchase not reversed yet.</param>
/// <param name="Lines">Per line (purchases by lines), units bought and returned.</param>
/// <param name="Full">Nothing is left to return.</param>
[GenerateSerializer, Immutable]
public sealed record ReturnStatus(
    [property: Id(0)] long ReturnedMinor,
    [property: Id(1)] long ReturnableMinor,
    [property: Id(2)] long ReversedPoints,
    [property: Id(3)] long ReversiblePoints,
    [property: Id(4)] IReadOnlyList<LineStatus> Lines,
    [property: Id(5)] bool Full);

/// <summary>A member's transaction found by its id, and where it stands.</summary>
/// <param name="Entry">The ledger entry that recorded it (a committed reservation: its commit).</param>
/// <param name="Returns">A purchase's return progress; null for other kinds.</param>
/// <param name="Reservation">A reservation's state; <see cref="ReservationState.None"/> for other kinds.</param>
[GenerateSerializer, Immutable]
public sealed record TransactionView(
    [property: Id(0)] LedgerEntry Entry,
    [property: Id(1)] ReturnStatus? Returns,
    [property: Id(2)] ReservationState Reservation);
