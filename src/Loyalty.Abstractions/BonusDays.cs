namespace Loyalty;

/// <summary>How a personal bonus day combines with the campaigns that also apply to a purchase.</summary>
public enum BonusDayStacking
{
    /// <summary>The day's extra points come on top of every campaign's.</summary>
    Stack = 1,

    /// <summary>The purchase gets the day's extra points or its campaigns' points (multipliers and bonuses together), whichever is larger.</summary>
    Larger = 2,
}

/// <summary>
/// Personal bonus days (Nordstrom's personal double-points days): each tier grants members a
/// number of days a year (<see cref="TierDefinition.BonusDaysPerYear"/>) that they choose
/// themselves; purchases on a booked day earn the basket times (<see cref="MultiplierBp"/> − 1) more.
/// </summary>
/// <param name="MultiplierBp">The day's multiplier on the basket points, above x1.</param>
/// <param name="Stacking">Whether it stacks with campaigns or the larger applies.</param>
[GenerateSerializer, Immutable]
public sealed record BonusDayPolicy(
    [property: Id(0)] int MultiplierBp,
    [property: Id(1)] BonusDayStacking Stacking)
{
    /// <summary>Returns null when the policy is valid, otherwise a message naming the field.</summary>
    public string? Check() =>
        MultiplierBp is <= Multipliers.One or > Multipliers.Max
            ? $"bonus_days.multiplier_bp must be {Multipliers.One + 1}..{Multipliers.Max} (a bonus day must give more than x1)"
            : !Enum.IsDefined(Stacking) ? "bonus_days.stacking must be STACK or LARGER" : null;
}

/// <summary>A member's (or a till's) booking of one personal bonus day.</summary>
/// <param name="BookingId">The idempotency key (shares the program's transaction ids).</param>
/// <param name="Day">The program-local calendar day booked.</param>
[GenerateSerializer, Immutable]
public sealed record BonusDayBooking(
    [property: Id(0)] string BookingId,
    [property: Id(1)] DateOnly Day)
{
    /// <summary>Returns null when the booking is well formed, otherwise a message naming the field.</summary>
    public string? Check() => LoyaltyIds.Check(BookingId, "booking_id");

    /// <summary>Identifies the booking's content, to tell a resend from a reuse of its id.</summary>
    public long ComputeFingerprint()
    {
        var f = new Fingerprint();
        f.Add("bonus-day");
        f.Add(BookingId);
        f.Add(Day.DayNumber);
        return f.Value;
    }
}

/// <summary>The answer to a booking: the day, whether it was booked before, and the member's bookings.</summary>
/// <param name="Day">The day booked.</param>
/// <param name="AlreadyBooked">The day was booked before (this or an earlier request); nothing new was written.</param>
/// <param name="DaysLeft">Days still free in the booked day's year under the member's tier.</param>
/// <param name="Booked">The member's booked days from today on, soonest first.</param>
/// <param name="Sequence">The ledger entry of the booking (0 when nothing was written).</param>
/// <param name="Error">Why it was refused.</param>
/// <param name="ErrorMessage">The reason in words.</param>
[GenerateSerializer, Immutable]
public sealed record BonusDayResult(
    [property: Id(0)] DateOnly Day,
    [property: Id(1)] bool AlreadyBooked,
    [property: Id(2)] int DaysLeft,
    [property: Id(3)] IReadOnlyList<DateOnly> Booked,
    [property: Id(4)] long Sequence,
    [property: Id(5)] LoyaltyError Error,
    [property: Id(6)] string? ErrorMessage)
{
    /// <summary>A refusal with the reason.</summary>
    public static BonusDayResult Reject(LoyaltyError error, string message) => new(default, false, 0, [], 0, error, message);
}
