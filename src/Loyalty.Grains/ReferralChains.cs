namespace Loyalty.Grains;

/// <summary>The referral chain as the cycle checks walk it, from a member up through its referrers.</summary>
internal static class ReferralChains
{
    /// <summary>
    /// The referrer above <paramref name="memberId"/> as a cycle check must follow it: its own
    /// (<see cref="IMemberGrain.GetReferrer"/>), or, when its ledger names none and a merge into it
    /// is open whose duplicate has let go to it, the referrer that merge gives it when it completes
    /// (the duplicate's). A link checked while such a merge is open (cut short after the duplicate
    /// let go, and completed by the due schedule later, unchecked) must not close a cycle once it
    /// completes.
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

        // Only once the duplicate has let go to this member: before, the merge is checked for
        // cycles again when it completes, and abandoned rather than made (the link made meanwhile
        // stands); and the duplicate may have gone to another member since.
        string duplicateKey = LoyaltyIds.MemberKey(programId, duplicate);
        if ((await grains.GetGrain<IMemberLinkSteps>(duplicateKey).GetLinks()).MergedInto != memberId)
        {
            return null;
        }

        string? inherited = await grains.GetGrain<IMemberGrain>(duplicateKey).GetReferrer();
        return inherited == memberId ? null : inherited;
    }
}
