namespace Loyalty.Grains;

/// <summary>A manual adjustment by support staff: points in (a lot of their expiry) or out (soonest-expiring lots first).</summary>
public static class AdjustmentDecision
{
    /// <summary>The adjustment's entry, or its refusal when it would take a floored balance below zero.</summary>
    public static Decision Decide(in Decider d, Adjustment adjustment, long fingerprint)
    {
        Points balance = d.State.Balance;
        if (d.Settings.NegativeBalance == NegativeBalancePolicy.FloorAtZero && (balance + adjustment.Points).Value < 0)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"the adjustment would take the active balance ({balance.Value}) below zero, and the program floors balances at zero");
        }

        EntryDetails details = adjustment.Points.Value >= 0
            ? new AdjustDetails { ExpiresAt = Decider.LotExpiry(d.Settings, d.Now) }
            : new AdjustDetails { Lots = d.State.Lots.PlanTakeBack(-adjustment.Points.Value, d.Now) };
        return Decision.Write(d.NewEntry(LedgerEntryKind.Adjust, adjustment.Points, adjustment.TransactionId, fingerprint) with
        {
            Reason = adjustment.Reason,
            Details = details,
        });
    }
}

/// <summary>A member's answer to a survey: its score with the member's tier, and the program's reward for answering.</summary>
public static class FeedbackDecision
{
    /// <summary>The feedback's entry (never refused once the request is valid and new).</summary>
    public static Decision Decide(in Decider d, Feedback feedback, long fingerprint)
    {
        var reward = new Points(d.Settings.FeedbackRewardPoints);
        var details = new FeedbackDetails
        {
            Score = feedback.Score,
            TierAfter = d.Settings.Ladder.Resolve(d.State.Tier),
            ExpiresAt = reward.Value > 0 ? Decider.LotExpiry(d.Settings, d.Now) : null,
        };
        return Decision.Write(d.NewEntry(LedgerEntryKind.Feedback, reward, feedback.FeedbackId, fingerprint) with
        {
            Reason = feedback.Comment,
            Reference = feedback.Channel,
            Details = details,
        });
    }
}
