namespace Loyalty.Grains;

/// <summary>The referral chain as the cycle checks walk it, from a member up through its referrers.</summary>
internal static class ReferralChains
{
    /// <summary>
    /// The referrer above <paramref name="memberId"/> as a cycle check must follow it: its own
    /// (<see cref="IMemberGrain.GetReferrer"/>), or, when its ledger names none and a merge into it
    /// is open, the referrer that merge gives it when it completes (the duplicate's). A link
    /// checked while such a merge is open (cut short after the duplicate let go, and completed by
    /// the due schedule later, unchecked) must not close a cycle once it completes.
    /// </summary>
    public static async Task<string?> ReferrerAboveAsync(IGrainFactory grains, string programId, string memberId)
    {
        string key = LoyaltyIds.MemberKey(programId, memberId);
        if (await grains.GetGrain<IMemberGrain>(key).GetReferrer() is { } referrer)
        {
            return referrer;
        }

        if (await grains.GetGrain<IMemberLinkSteps>(key).GetLinks() is not { ReferredBy: null, MergingFrom: { } duplicate })
        {
            return null;
        }

        string? inherited = await grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(programId, duplicate)).GetReferrer();
        return inherited == memberId ? null : inherited;
    }
}
