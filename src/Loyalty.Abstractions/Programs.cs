namespace Loyalty;

/// <summary>What an administrator sets on a program (retailer).</summary>
[GenerateSerializer, Immutable]
public sealed record ProgramSettings(
    [property: Id(0)] string Name,
    [property: Id(1)] string Currency,
    [property: Id(2)] int CurrencyExponent,
    [property: Id(3)] long EarnPointsPerUnit)
{
    /// <summary>Returns null when the settings are valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (string.IsNullOrWhiteSpace(Name) || Name.Length > Limits.NameLengthMax)
        {
            return $"name is required and at most {Limits.NameLengthMax} characters";
        }

        if (!CurrencyCodes.IsWellFormed(Currency))
        {
            return "currency must be a three-letter ISO 4217 code such as USD";
        }

        if (CurrencyExponent is < 0 or > 4)
        {
            return "currency_exponent must be 0..4";
        }

        if (EarnPointsPerUnit is < 0 or > Limits.EarnPointsPerUnitMax)
        {
            return $"earn_points_per_unit must be 0..{Limits.EarnPointsPerUnitMax}";
        }

        return null;
    }
}

/// <summary>A program's configuration as the engine applies it, with its version.</summary>
[GenerateSerializer, Immutable]
public sealed record ProgramConfig(
    [property: Id(0)] string ProgramId,
    [property: Id(1)] ProgramSettings Settings,
    [property: Id(2)] long Version);

/// <summary>Checks on ISO 4217 currency codes.</summary>
public static class CurrencyCodes
{
    /// <summary>True for three upper-case ASCII letters.</summary>
    public static bool IsWellFormed(string? code) =>
        code is { Length: 3 } && code.All(c => c is >= 'A' and <= 'Z');
}
