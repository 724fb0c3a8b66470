namespace Loyalty.Grains;

/// <summary>How many points a purchase earns under a program's configuration.</summary>
public static class Earning
{
    /// <summary>
    /// The base earn: the purchase total in currency units times the program's rate, rounded
    /// down once. Deterministic: the same purchase under the same program version earns the
    /// same points.
    /// </summary>
    public static Points Compute(Purchase purchase, ProgramConfig program) =>
        new(purchase.Amount.TimesRateRoundedDown(program.Settings.EarnPointsPerUnit, program.Settings.CurrencyExponent));
}
