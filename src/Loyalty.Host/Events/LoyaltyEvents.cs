using System.Collections.Frozen;
using Google.Protobuf.WellKnownTypes;
using Loyalty.Host.Grpc;
using Loyalty.Storage;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Events;

/// <summary>
/// What each ledger entry means to a subscriber: its event type, and the facts a client would
/// otherwise have to work out (a tier change, the points about to expire). Pure: the same entry
/// always gives the same events, so a replay and a live delivery agree, and event ids are stable.
/// </summary>
public static class LoyaltyEvents
{
    /// <summary>The derived event of an entry that moved the member's tier.</summary>
    public const string TierChanged = "tier.changed";

    /// <summary>Types a subscription may name at most.</summary>
    public const int TypesPerFilterMax = 32;

    /// <summary>The event type of each entry kind; every kind has one (a test checks).</summary>
    public static readonly FrozenDictionary<LedgerEntryKind, string> TypeOfKind = new Dictionary<LedgerEntryKind, string>
    {
        [LedgerEntryKind.Enrol] = "member.enrolled",
        [LedgerEntryKind.Earn] = "points.earned",
        [LedgerEntryKind.ReferralLink] = "referral.linked",
        [LedgerEntryKind.Return] = "points.returned",
        [LedgerEntryKind.Adjust] = "points.adjusted",
        [LedgerEntryKind.Flags] = "member.flags_changed",
        [LedgerEntryKind.Redeem] = "reward.redeemed",
        [LedgerEntryKind.Reserve] = "reservation.created",
        [LedgerEntryKind.ReservationEnd] = "reservation.ended",
        [LedgerEntryKind.Expire] = "points.expired",
        [LedgerEntryKind.ExpiryWarning] = "points.expiring",
        [LedgerEntryKind.Referred] = "member.referred",
        [LedgerEntryKind.ReferralReward] = "referral.rewarded",
        [LedgerEntryKind.Profile] = "member.profile_changed",
        [LedgerEntryKind.Erase] = "member.erased",
        [LedgerEntryKind.MergedAway] = "member.merged_away",
        [LedgerEntryKind.MergedIn] = "member.merged",
        [LedgerEntryKind.Repointed] = "referral.repointed",
        [LedgerEntryKind.ReferralSettled] = "referral.settled",
        [LedgerEntryKind.Feedback] = "feedback.recorded",
        [LedgerEntryKind.BonusDayBooked] = "bonus_day.booked",
        [LedgerEntryKind.CauseChosen] = "member.cause_chosen",
        [LedgerEntryKind.Birthday] = "birthday.rewarded",
        [LedgerEntryKind.MembershipStarted] = "membership.started",
        [LedgerEntryKind.MembershipRenewed] = "membership.renewed",
        [LedgerEntryKind.MembershipCancelled] = "membership.cancelled",
        [LedgerEntryKind.MembershipLapsed] = "membership.lapsed",
        [LedgerEntryKind.TradeInSubmitted] = "trade_in.submitted",
        [LedgerEntryKind.TradeInAccepted] = "trade_in.accepted",
        [LedgerEntryKind.TradeInRejected] = "trade_in.rejected",
        [LedgerEntryKind.TierReviewed] = "tier.reviewed",
        [LedgerEntryKind.ReferralConfirmed] = "referral.confirmed",
        [LedgerEntryKind.ReferralWithdrawn] = "referral.withdrawn",
        [LedgerEntryKind.MergeStarted] = "member.merge_started",
        [LedgerEntryKind.MergeSettled] = "member.merge_settled",
    }.ToFrozenDictionary();

    /// <summary>Every event type, for validating filters.</summary>
    public static readonly FrozenSet<string> AllTypes = TypeOfKind.Values.Append(TierChanged).ToFrozenSet(StringComparer.Ordinal);

    /// <summary>
    /// How many events an entry gives: its own, and a <see cref="TierChanged"/> after it when
    /// the member's tier before (or before a review's downgrade) differs from the tier after.
    /// </summary>
    public static int CountOf(LedgerEntry entry) => TierChangeOf(entry) is null ? 1 : 2;

    /// <summary>The <paramref name="index"/>th event of a positioned entry (0 is its own, 1 the tier change).</summary>
    public static V1.Event ToEvent(PositionedEntry positioned, int index)
    {
        LedgerEntry entry = positioned.Entry;
        var message = new V1.Event
        {
            Cursor = EventCursor.Format(positioned.Position, index),
            EventId = IdOf(entry, index),
            Type = TypeOf(entry, index),
            ProgramId = entry.ProgramId,
            MemberId = entry.MemberId,
            Time = Timestamp.FromDateTimeOffset(entry.RecordedAt),
            Entry = WireMapping.ToMessage(entry),
        };
        if (index == 1)
        {
            (string from, string to) = TierChangeOf(entry)!.Value;
            message.TierChange = new V1.TierChange { FromTier = from, ToTier = to };
        }
        else if (entry.Kind == LedgerEntryKind.ExpiryWarning && ExpiringOf(entry) is { } expiring)
        {
            message.Expiring = expiring;
        }

        return message;
    }

    /// <summary>The type of an entry's <paramref name="index"/>th event.</summary>
    public static string TypeOf(LedgerEntry entry, int index) =>
        index == 1 ? TierChanged
        : TypeOfKind.TryGetValue(entry.Kind, out string? type) ? type
        : throw new InvalidOperationException($"Ledger entry kind {entry.Kind} has no event type.");

    /// <summary>Unique within the program and the same every time: the member, the entry's sequence, and the index.</summary>
    public static string IdOf(LedgerEntry entry, int index) =>
        index == 0 ? $"{entry.MemberId}/{entry.Sequence}" : $"{entry.MemberId}/{entry.Sequence}/{index}";

    /// <summary>Characters an event id may have: a member id, a sequence and an index, with room to spare.</summary>
    public const int EventIdLengthMax = 200;

    /// <summary>The member, sequence and index an event id names, or null when it is not one.</summary>
    public static (string Member, long Sequence, int Index)? ParseId(string eventId)
    {
        string[] parts = eventId.Length > EventIdLengthMax ? [] : eventId.Split('/');
        return parts.Length is 2 or 3 && parts[0].Length > 0
            && long.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long sequence) && sequence > 0
            && (parts.Length == 2 || parts[2] == "1")
                ? (parts[0], sequence, parts.Length - 2)
                : null;
    }

    /// <summary>The tier before (or before a review's downgrade) and after the entry, when they differ.</summary>
    public static (string From, string To)? TierChangeOf(LedgerEntry entry)
    {
        // Only entries that decide the tier: an enrolment starts at the entry tier (no change), and a
        // feedback or a bonus-day booking names the tier the member had at the time.
        if (entry.Details is not ITierOutcome { TierAfter: { } to } tier)
        {
            return null;
        }

        string from = tier.DowngradedFrom ?? tier.TierBefore ?? to;
        return string.Equals(from, to, StringComparison.Ordinal) ? null : (from, to);
    }

    private static V1.ExpiringPoints? ExpiringOf(LedgerEntry entry)
    {
        ExpiryWarningDetails? warning = entry.DetailsAs<ExpiryWarningDetails>();
        IReadOnlyList<LotUse> lots = warning?.Lots ?? [];
        // An inactivity warning's points go at its deadline; the lots it names, at their own expiry.
        long atDeadline = warning?.InactivityPoints ?? 0;
        long points = atDeadline;
        DateTimeOffset? earliest = warning?.InactivityDeadline;
        foreach (LotUse lot in lots)
        {
            // A lot that would outlive the deadline is in its points already.
            bool inDeadlines = atDeadline > 0 && lot.ExpiresAt >= warning!.InactivityDeadline;
            points = inDeadlines ? points : checked(points + lot.Points);
            if (lot.ExpiresAt is { } at && (earliest is null || at < earliest))
            {
                earliest = at;
            }
        }

        return new V1.ExpiringPoints
        {
            Points = points,
            ExpiresAt = earliest is { } when ? Timestamp.FromDateTimeOffset(when) : null,
        };
    }
}
