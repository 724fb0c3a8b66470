namespace Loyalty;

/// <summary>An amount of money in integer minor units (e.g. cents) of one currency.</summary>
[GenerateSerializer, Immutable]
public readonly record struct Money([property: Id(0)] long AmountMinor, [property: Id(1)] string Currency)
{
    /// <summary>
    /// This amount in currency units times <paramref name="perUnit"/>, rounded down once at the
    /// end: 12.99 USD at 2 points per unit is 25 points (25.98 rounded down). Checked: overflow throws.
    /// </summary>
    public long TimesRateRoundedDown(long perUnit, int currencyExponent)
    {
        long minorPerUnit = MinorPerUnit(currencyExponent);
        // Multiply first so fractional rates stay exact, then round toward zero.
        return checked(AmountMinor * perUnit) / minorPerUnit;
    }

    /// <summary>Ten to the power of the currency exponent (0..4).</summary>
    public static long MinorPerUnit(int currencyExponent) => currencyExponent switch
    {
        0 => 1,
        1 => 10,
        2 => 100,
        3 => 1000,
        4 => 10000,
        _ => throw new ArgumentOutOfRangeException(nameof(currencyExponent), currencyExponent, "Currency exponent must be 0..4."),
    };
}
