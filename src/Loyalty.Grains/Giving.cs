namespace Loyalty.Grains;

/// <summary>Giving back, decided purely: what a purchase gives and to which cause, and what a return takes back.</summary>
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

    /// <summary>
    /// What a return of <paramref name="returnedNowMinor"/> takes back of <paramref name="givenMinor"/>
    /// that a purchase of <paramref name="amountMinor"/> gave, after <paramref name="returnedBeforeMinor"/>
    /// was returned before: the share of the money returned so far, rounded down, less what earlier
    /// returns took. Partial returns never take back more than was given; returning all takes back all.
    /// The same share gives back the store credit a purchase was paid with.
    /// </summary>
    public static long TakenBack(long givenMinor, long amountMinor, long returnedBeforeMinor, long returnedNowMinor)
    {
        if (givenMinor <= 0 || amountMinor <= 0)
        {
            return 0;
        }

        long after = Math.Min(amountMinor, checked(returnedBeforeMinor + returnedNowMinor));
        return (long)(((Int128)givenMinor * after / amountMinor) - ((Int128)givenMinor * Math.Min(amountMinor, returnedBeforeMinor) / amountMinor));
    }
}
