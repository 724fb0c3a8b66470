namespace Loyalty.Grains;

/// <summary>Giving back, decided purely: what a purchase gives and to which cause (a return takes its share back through <see cref="Reversal.TakenBack"/>).</summary>
public static class GivingRules
{
    /// <summary>
    /// The cause a purchase of a member who chose <paramref name="chosen"/> gives to under
    /// <paramref name="policy"/>, and how much of <paramref name="amountMinor"/>; (null, 0) when it gives nothing.
    /// A chosen cause the programme no longer lists falls back to the default cause.
    /// </summary>
    public static (string? Cause, long GivenMinor) OfPurchase(GivingPolicy? policy, string? chosen, long amountMinor)
    {
        string? cause = policy is null ? null : policy.Has(chosen) ? chosen : policy.DefaultCause;
        long given = cause is null ? 0 : policy!.ShareOf(amountMinor);
        return given > 0 ? (cause, given) : (null, 0);
    }
}
