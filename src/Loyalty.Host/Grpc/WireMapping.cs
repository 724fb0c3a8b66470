using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Small pure functions between wire messages and domain records.</summary>
internal static class WireMapping
{
    /// <summary>The gRPC status for a domain refusal.</summary>
    public static StatusCode ToStatusCode(LoyaltyError error) => error switch
    {
        LoyaltyError.InvalidArgument => StatusCode.InvalidArgument,
        LoyaltyError.NotFound => StatusCode.NotFound,
        LoyaltyError.AlreadyExists => StatusCode.AlreadyExists,
        LoyaltyError.FailedPrecondition => StatusCode.FailedPrecondition,
        LoyaltyError.Unavailable => StatusCode.Unavailable,
        LoyaltyError.PermissionDenied => StatusCode.PermissionDenied,
        _ => throw new ArgumentOutOfRangeException(nameof(error), error, "Not a refusal."),
    };

    /// <summary>An exception carrying the status for a domain refusal.</summary>
    public static RpcException ToRpcException(LoyaltyError error, string? message) =>
        new(new Status(ToStatusCode(error), Bounded.Detail(message ?? error.ToString())));

    /// <summary>
    /// Maps a purchase message, or returns the reason it cannot be: ids, amounts, line items and
    /// the timestamp are all checked here, before any grain is called.
    /// </summary>
    public static Purchase? ToPurchase(V1.Purchase message, DateTimeOffset now, out string? error)
    {
        if (message.OccurredAt is null)
        {
            error = "occurred_at is required";
            return null;
        }

        DateTimeOffset occurredAt;
        try
        {
            occurredAt = message.OccurredAt.ToDateTimeOffset();
        }
        catch (InvalidOperationException)
        {
            error = "occurred_at is out of range";
            return null;
        }

        if (message.LineItems.Count > Limits.LineItemsMax)
        {
            error = $"line_items has more than {Limits.LineItemsMax} entries";
            return null;
        }

        var lines = new LineItem[message.LineItems.Count];
        for (int i = 0; i < lines.Length; i++)
        {
            V1.LineItem line = message.LineItems[i];
            lines[i] = new LineItem(line.Sku, line.Category, line.Quantity, line.AmountMinor);
        }

        var purchase = new Purchase(
            message.TransactionId, message.ProgramId, message.MemberId, message.StoreId,
            new Money(message.AmountMinor, message.Currency), occurredAt, lines,
            (SalesChannel)(int)message.Channel, message.Tender.Length == 0 ? null : message.Tender,
            message.RedeemRewardId.Length == 0 ? null : message.RedeemRewardId,
            message.RedeemRewardId.Length == 0 ? 0 : message.RedeemQuantity == 0 ? 1 : message.RedeemQuantity,
            message.WalletMinor);
        error = purchase.Check(now);
        return error is null ? purchase : null;
    }

    /// <summary>The acknowledgement for an accrual result.</summary>
    public static V1.PurchaseAck ToAck(AccrualResult result) =>
        FillAck(new V1.PurchaseAck(), result, result.Details is null ? null : new V1.Breakdown(), spareComponents: null);

    /// <summary>
    /// Fills <paramref name="ack"/>, new or cleared (<see cref="Clear"/>), with the answer to
    /// <paramref name="result"/>; its breakdown goes into <paramref name="breakdown"/> (new or
    /// cleared; needed when the result has details), its components into
    /// <paramref name="spareComponents"/>' messages, which grow to the most any answer had.
    /// </summary>
    public static V1.PurchaseAck FillAck(V1.PurchaseAck ack, AccrualResult result, V1.Breakdown? breakdown, List<V1.BreakdownComponent>? spareComponents)
    {
        ack.TransactionId = result.TransactionId;
        ack.Status = StatusOf(result);
        ack.PointsEarned = result.Earned.Value;
        ack.Balance = result.Balance.Value;
        ack.Sequence = result.Sequence;
        ack.ErrorCode = result.Error == LoyaltyError.None ? "" : StatusName(ToStatusCode(result.Error));
        ack.ErrorMessage = Bounded.Detail(result.ErrorMessage);
        ack.Breakdown = result.Details is null ? null : FillBreakdown(breakdown!, result.Details, spareComponents);
        ack.AvailableAt = result.AvailableAt is { } availableAt ? Timestamp.FromDateTimeOffset(availableAt) : null;
        ack.ProgramVersion = result.ProgramVersion;
        ack.PointsRedeemed = result.Redeemed.Value;
        ack.PendingPoints = result.Pending.Value;
        if (result.RedeemedLots is { Count: > 0 } lots)
        {
            ack.RedeemedLots.AddRange(lots.Select(ToMessage));
        }

        return ack;
    }

    /// <summary>The wire status of an accrual result.</summary>
    public static V1.AckStatus StatusOf(AccrualResult result) => result.Status switch
    {
        AccrualStatus.Accepted => V1.AckStatus.Accepted,
        AccrualStatus.Duplicate => V1.AckStatus.Duplicate,
        _ => V1.AckStatus.Rejected,
    };

    /// <summary>
    /// Resets every field of <paramref name="message"/> to its default (repeated fields emptied,
    /// keeping their arrays; messages unset) through its descriptor, so that a field the API
    /// gains later is reset too. For messages filled again rather than made anew.
    /// </summary>
    public static void Clear(IMessage message)
    {
        IList<FieldDescriptor> fields = message.Descriptor.Fields.InDeclarationOrder();
        for (int i = 0; i < fields.Count; i++)
        {
            fields[i].Accessor.Clear(message);
        }
    }

    /// <summary>
    /// Maps a return message, or returns the reason it cannot be; the return's own checks run here
    /// too, before any grain is called.
    /// </summary>
    public static PurchaseReturn? ToReturn(V1.ReturnRequest message, DateTimeOffset now, out string? error)
    {
        DateTimeOffset occurredAt = default;
        try
        {
            occurredAt = message.OccurredAt?.ToDateTimeOffset() ?? default;
        }
        catch (InvalidOperationException)
        {
            error = "occurred_at is out of range";
            return null;
        }

        if (message.Lines.Count > Limits.LineItemsMax)
        {
            error = $"lines has more than {Limits.LineItemsMax} entries";
            return null;
        }

        var request = new PurchaseReturn(
            message.TransactionId, message.ProgramId, message.MemberId, message.OriginalTransactionId, message.StoreId,
            new Money(message.AmountMinor, message.Currency), occurredAt,
            [.. message.Lines.Select(l => new ReturnLine(l.Sku, l.Quantity, l.AmountMinor))]);
        error = request.Check(now);
        return error is null ? request : null;
    }

    /// <summary>The acknowledgement of a return.</summary>
    public static V1.ReturnAck ToAck(ReturnResult result) => new()
    {
        TransactionId = result.TransactionId,
        Status = result.Status == AccrualStatus.Accepted ? V1.AckStatus.Accepted : V1.AckStatus.Duplicate,
        PointsReversed = result.Reversed.Value,
        Balance = result.Balance.Value,
        PendingPoints = result.Pending.Value,
        Sequence = result.Sequence,
        Breakdown = result.Details is null ? null : ToBreakdown(result.Details),
    };

    /// <summary>
    /// The breakdown message of an entry's details: one message for every kind (the API's), filled
    /// from the facts the kind's record has; what a kind does not have stays at its default.
    /// </summary>
    public static V1.Breakdown ToBreakdown(EntryDetails d) => FillBreakdown(new V1.Breakdown(), d, spareComponents: null);

    /// <summary>Fills <paramref name="m"/>, new or cleared, with <paramref name="d"/>'s breakdown (see <see cref="FillAck"/> for the spares).</summary>
    private static V1.Breakdown FillBreakdown(V1.Breakdown m, EntryDetails d, List<V1.BreakdownComponent>? spareComponents)
    {
        switch (d)
        {
            case EarnDetails earn:
                AddComponents(m, earn.Components, spareComponents);
                (m.CappedPoints, m.RewardId, m.Quantity) = (earn.CappedPoints, earn.RewardId ?? "", earn.Quantity);
                if (earn.CapsHit.Count > 0)
                {
                    // Most earns hit no cap: AddRange would make an enumerator even of nothing.
                    m.CapsHit.AddRange(earn.CapsHit);
                }
                break;
            case ReturnDetails ret:
                AddComponents(m, ret.Components, spareComponents);
                (m.PendingReversed, m.ActiveReversed, m.Shortfall) = (ret.PendingReversed, ret.ActiveReversed, ret.Shortfall);
                if (ret.Restored is { Count: > 0 } restored)
                {
                    m.Restored.AddRange(restored.Select(ToMessage));
                }

                if (ret.ExpiredUnrestored is { Count: > 0 } expired)
                {
                    m.ExpiredUnrestored.AddRange(expired.Select(ToMessage));
                }

                break;
            case EnrolDetails enrol:
                AddComponents(m, enrol.Components, spareComponents);
                m.TierBefore = m.TierAfter = enrol.TierAfter ?? "";
                break;
            default:
                FillOther(m, d);
                break;
        }

        Fill(m, d);
        return m;
    }

    /// <summary>The facts several kinds share: the tier decision, a credited lot's expiry, the lots taken, money moved.</summary>
    private static void Fill(V1.Breakdown m, EntryDetails d)
    {
        if (d is ITierOutcome tier)
        {
            (m.TierBefore, m.TierAfter, m.DowngradedFrom) = (tier.TierBefore ?? "", tier.TierAfter ?? "", tier.DowngradedFrom ?? "");
            m.TierReviewAt = Time(tier.TierReviewAt);
        }

        if (d is ILotCredit credit)
        {
            m.ExpiresAt = Time(credit.ExpiresAt);
        }

        // Most acks have no lots: no iterator is made for them.
        if (d is ILotsTaken { Lots: { Count: > 0 } lots })
        {
            m.Lots.AddRange(lots.Select(ToMessage));
        }

        if (d is IMoneyMoved money)
        {
            (m.Cause, m.GivenMinor, m.WalletMinor) = (money.Cause ?? "", money.GivenMinor, money.WalletMinor);
        }
    }

    /// <summary>The facts of the kinds other than earns, returns and enrolments.</summary>
    private static void FillOther(V1.Breakdown m, EntryDetails d)
    {
        switch (d)
        {
            case RedeemDetails redeem:
                (m.RewardId, m.Quantity, m.HeldPoints, m.BirthdayGift, m.Cause) = (redeem.RewardId ?? "", redeem.Quantity, redeem.HeldPoints, redeem.BirthdayGift, redeem.Cause ?? "");
                break;
            case ReserveDetails reserve:
                (m.RewardId, m.Quantity, m.HeldPoints, m.LapsesAt, m.Cause) = (reserve.RewardId ?? "", reserve.Quantity, reserve.HeldPoints, Time(reserve.LapsesAt), reserve.Cause ?? "");
                break;
            case ReservationEndDetails end:
                (m.RewardId, m.Quantity, m.HeldPoints, m.EndedAs) = (end.RewardId ?? "", end.Quantity, end.HeldPoints, (V1.ReservationState)(int)end.EndedAs);
                break;
            case ExpireDetails expire:
                m.InactivityDeadline = Time(expire.InactivityDeadline);
                break;
            case ExpiryWarningDetails warning:
                m.InactivityDeadline = Time(warning.InactivityDeadline);
                break;
            case ReferralRewardDetails reward:
                m.Shortfall = reward.Shortfall;
                break;
            case FeedbackDetails feedback:
                m.TierBefore = m.TierAfter = feedback.TierAfter ?? "";
                break;
            case BonusDayBookedDetails booked:
                m.TierBefore = m.TierAfter = booked.TierAfter ?? "";
                m.BonusDay = booked.BonusDay == 0 ? "" : IsoDay(DateOnly.FromDayNumber(booked.BonusDay));
                break;
            case BirthdayDetails { Birthday: { } birthday }:
                m.RewardId = birthday.GiftRewardId ?? "";
                m.LapsesAt = birthday.GiftRewardId is null ? null : Timestamp.FromDateTimeOffset(birthday.GiftUntil);
                break;
            case MembershipDetails { Membership: { } membership }:
                (m.PlanId, m.TermEndsAt, m.Trial) = (membership.PlanId, Timestamp.FromDateTimeOffset(membership.TermEndsAt), membership.Trial);
                break;
            case TradeInDetails trade:
                m.TradeInCategory = trade.TradeIn?.Category ?? "";
                m.TradeInCondition = (V1.TradeInCondition)(int)(trade.TradeIn?.Condition ?? 0);
                m.WalletMinor = (trade as TradeInAcceptedDetails)?.WalletMinor ?? 0;
                break;
        }
    }

    private static void AddComponents(V1.Breakdown m, IReadOnlyList<BreakdownComponent> components, List<V1.BreakdownComponent>? spares)
    {
        long basePoints = 0;
        if (m.Components.Capacity < components.Count)
        {
            m.Components.Capacity = components.Count;
        }

        for (int i = 0; i < components.Count; i++)
        {
            BreakdownComponent c = components[i];
            if (c.Kind is ComponentKind.Base or ComponentKind.Product)
            {
                basePoints += c.Points;
            }

            V1.BreakdownComponent message = Component(spares, i);
            (message.Kind, message.Code, message.Points) = ((V1.ComponentKind)(int)c.Kind, c.Code, c.Points);
            m.Components.Add(message);
        }

        m.BasePoints = basePoints;
    }

    /// <summary>A new component message, or the <paramref name="index"/>th spare, cleared (made and kept when there are fewer).</summary>
    private static V1.BreakdownComponent Component(List<V1.BreakdownComponent>? spares, int index)
    {
        if (spares is null)
        {
            return new V1.BreakdownComponent();
        }

        if (index == spares.Count)
        {
            spares.Add(new V1.BreakdownComponent());
        }

        V1.BreakdownComponent spare = spares[index];
        Clear(spare);
        return spare;
    }

    /// <summary>The lot message.</summary>
    public static V1.LotUse ToMessage(LotUse lot) => new() { LotId = lot.LotId, Points = lot.Points, ExpiresAt = Time(lot.ExpiresAt) };

    /// <summary>The acknowledgement of a redeem, a reservation, its commit or its cancel.</summary>
    public static V1.RedemptionAck ToAck(RedemptionResult r)
    {
        var ack = new V1.RedemptionAck
        {
            TransactionId = r.TransactionId,
            Status = r.Status == AccrualStatus.Accepted ? V1.AckStatus.Accepted : V1.AckStatus.Duplicate,
            Points = r.Points.Value,
            Balance = r.Balance.Value,
            AvailablePoints = r.Available.Value,
            Sequence = r.Sequence,
            RewardId = r.RewardId ?? "",
            Quantity = r.Quantity,
            Reservation = (V1.ReservationState)(int)r.Reservation,
            LapsesAt = Time(r.LapsesAt),
        };
        ack.Lots.AddRange(r.Lots.Select(ToMessage));
        return ack;
    }

    private static Timestamp? Time(DateTimeOffset? at) => at is { } value ? Timestamp.FromDateTimeOffset(value) : null;

    /// <summary>A timestamp as a time, or false when it lies outside what a timestamp may hold.</summary>
    public static bool TryToTime(Timestamp timestamp, out DateTimeOffset at)
    {
        try
        {
            at = timestamp.ToDateTimeOffset();
            return true;
        }
        catch (InvalidOperationException)
        {
            at = default;
            return false;
        }
    }

    /// <summary>A rejection acknowledgement for a purchase that never reached a grain.</summary>
    public static V1.PurchaseAck Rejected(string transactionId, StatusCode code, string message) => new()
    {
        // An id too long to be valid is not echoed whole.
        TransactionId = transactionId.Length <= Limits.IdLengthMax ? transactionId : Bounded.Echo(transactionId),
        Status = V1.AckStatus.Rejected,
        ErrorCode = StatusName(code),
        ErrorMessage = Bounded.Detail(message),
    };

    /// <summary>The canonical upper-case name of a status code, e.g. INVALID_ARGUMENT.</summary>
    public static string StatusName(StatusCode code) => code switch
    {
        StatusCode.InvalidArgument => "INVALID_ARGUMENT",
        StatusCode.NotFound => "NOT_FOUND",
        StatusCode.AlreadyExists => "ALREADY_EXISTS",
        StatusCode.FailedPrecondition => "FAILED_PRECONDITION",
        StatusCode.Unavailable => "UNAVAILABLE",
        StatusCode.ResourceExhausted => "RESOURCE_EXHAUSTED",
        StatusCode.PermissionDenied => "PERMISSION_DENIED",
        StatusCode.Unauthenticated => "UNAUTHENTICATED",
        StatusCode.DeadlineExceeded => "DEADLINE_EXCEEDED",
        StatusCode.OK => "OK",
        _ => code.ToString().ToUpperInvariant(),
    };

    private static V1.TierProgress ToMessage(TierProgress p) => new()
    {
        Basis = (V1.TierBasis)(int)p.Basis,
        NextTier = p.NextTier ?? "",
        NextThreshold = p.NextThreshold,
        ToNextTier = p.ToNextTier,
        KeepTierBy = Time(p.KeepTierBy),
        ToKeepTier = p.ToKeepTier,
    };

    /// <summary>One reward as a member sees it.</summary>
    public static V1.RewardOption ToMessage(RewardOption o)
    {
        var m = new V1.RewardOption
        {
            Reward = ProgramMapping.ToMessage(o.Reward),
            Redeemable = o.Block == RewardBlock.None,
            BlockedBy = (V1.RewardBlock)(int)o.Block,
            Reason = o.Reason ?? "",
            PointsShort = o.PointsShort,
            MaxUnits = o.MaxUnits,
        };
        if (o.StockLeft is { } left)
        {
            m.StockLeft = left;
        }

        return m;
    }

    /// <summary>The earn preview's message.</summary>
    public static V1.PurchaseQuote ToMessage(QuoteResult q)
    {
        var m = new V1.PurchaseQuote
        {
            Points = q.Points.Value,
            Breakdown = q.Details is { } details ? ToBreakdown(details) : null,
            AvailableAt = Time(q.AvailableAt),
            Balance = q.Balance.Value,
            AvailablePoints = q.Available.Value,
            PendingPoints = q.Pending.Value,
            AvailableAfter = q.AvailableAfter.Value,
            PointsRedeemed = q.Redeemed.Value,
            ProgramVersion = q.ProgramVersion,
        };
        m.Rewards.AddRange((q.Rewards ?? []).Select(ToMessage));
        return m;
    }

    /// <summary>A transaction and where it stands.</summary>
    public static V1.Transaction ToMessage(TransactionView t)
    {
        var m = new V1.Transaction { Entry = ToMessage(t.Entry), ReservationState = (V1.ReservationState)(int)t.Reservation };
        if (t.Returns is { } r)
        {
            m.ReturnProgress = new V1.ReturnProgress
            {
                ReturnedMinor = r.ReturnedMinor,
                ReturnableMinor = r.ReturnableMinor,
                ReversedPoints = r.ReversedPoints,
                ReversiblePoints = r.ReversiblePoints,
                FullyReturned = r.Full,
            };
            m.ReturnProgress.Lines.AddRange(r.Lines.Select(l => new V1.LineProgress { Sku = l.Sku, Quantity = l.Quantity, ReturnedQuantity = l.ReturnedQuantity }));
        }

        return m;
    }

    /// <summary>The membership message.</summary>
    public static V1.Membership ToMessage(MembershipView v)
    {
        var m = new V1.Membership
        {
            PlanId = v.PlanId,
            Status = (V1.MembershipStatus)(int)v.Status,
            StartedAt = Timestamp.FromDateTimeOffset(v.StartedAt),
            TermEndsAt = Timestamp.FromDateTimeOffset(v.TermEndsAt),
            EarlyAccess = v.EarlyAccess,
            MultiplierBp = v.MultiplierBp,
        };
        m.Perks.AddRange(v.Perks);
        m.History.AddRange(v.History.Select(h => new V1.MembershipStep
        {
            Kind = ToMessage(h.Kind),
            PlanId = h.PlanId,
            At = Timestamp.FromDateTimeOffset(h.At),
            TermEndsAt = Timestamp.FromDateTimeOffset(h.TermEndsAt),
            PaymentId = h.PaymentId ?? "",
            AmountMinor = h.AmountMinor,
        }));
        return m;
    }

    /// <summary>A calendar day as YYYY-MM-DD.</summary>
    public static string IsoDay(DateOnly day) => day.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A calendar day from YYYY-MM-DD, or null with a message naming <paramref name="field"/>.</summary>
    public static DateOnly? ParseDay(string text, string field, out string? error)
    {
        DateOnly day = default;
        bool ok = text.Length == 10 && DateOnly.TryParseExact(text, "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.None, out day);
        error = ok ? null : $"{field} must be a day as YYYY-MM-DD";
        return ok ? day : null;
    }

    /// <summary>The member message.</summary>
    public static V1.Member ToMessage(MemberView m)
    {
        var message = new V1.Member
        {
            ProgramId = m.ProgramId,
            MemberId = m.MemberId,
            Balance = m.Balance.Value,
            Tier = m.Tier,
            ReferredBy = m.ReferredBy ?? "",
            LifetimeEarned = m.LifetimeEarned.Value,
            EnrolledAt = Timestamp.FromDateTimeOffset(m.EnrolledAt),
            LastSequence = m.LastSequence,
            PendingPoints = m.Pending.Value,
            TierReviewAt = m.TierReviewAt is { } reviewAt ? Timestamp.FromDateTimeOffset(reviewAt) : null,
            TierQualifying = m.TierQualifying,
            ShortfallPoints = m.Shortfall.Value,
            LifetimeReversed = m.LifetimeReversed.Value,
            HeldPoints = m.Held.Value,
            AvailablePoints = m.Available.Value,
            LifetimeRedeemed = m.LifetimeRedeemed.Value,
            LifetimeExpired = m.LifetimeExpired.Value,
            LastActivityAt = Time(m.LastActivityAt),
            ReferralQualifiedBy = m.ReferralQualifiedBy ?? "",
            Erased = m.Erased,
            MergedInto = m.MergedInto ?? "",
            TierProgress = m.TierProgress is { } progress ? ToMessage(progress) : null,
            BonusDaysLeft = m.BonusDaysLeft,
            Cause = m.Cause ?? "",
            GivenMinor = m.GivenMinor,
            BirthdayGift = m.BirthdayGift is { } gift ? new V1.BirthdayGift { RewardId = gift.GiftRewardId ?? "", Until = Timestamp.FromDateTimeOffset(gift.GiftUntil), Year = gift.Year } : null,
            Membership = m.Membership is { } membership ? ToMessage(membership) : null,
            WalletMinor = m.WalletMinor,
        };
        message.TradeIns.AddRange((m.TradeIns ?? []).Select(t => new V1.PendingTradeIn { TradeInId = t.TradeInId, Category = t.Category, SubmittedAt = Timestamp.FromDateTimeOffset(t.SubmittedAt) }));
        message.BonusDays.AddRange((m.BonusDays ?? []).Select(IsoDay));
        message.MergedFrom.AddRange(m.MergedFrom ?? []);
        foreach ((string name, string value) in m.Profile ?? new Dictionary<string, string>())
        {
            message.Profile[name] = value;
        }

        message.Expiring.AddRange((m.Expiring ?? []).Select(e => new V1.UpcomingExpiry
        {
            ExpiresAt = Timestamp.FromDateTimeOffset(e.ExpiresAt),
            Points = e.Points.Value,
            Reason = e.Reason,
        }));
        message.Referrals.AddRange(m.Referrals);
        message.Pending.AddRange(m.PendingLots.Select(l => new V1.PendingPoints
        {
            TransactionId = l.TransactionId,
            Points = l.Points.Value,
            AvailableAt = Timestamp.FromDateTimeOffset(l.AvailableAt),
        }));
        message.Flags.AddRange(m.Flags);
        message.Perks.AddRange(m.Perks);
        return message;
    }

    /// <summary>The program message.</summary>
    public static V1.Program ToMessage(ProgramConfig p) => new()
    {
        ProgramId = p.ProgramId,
        Settings = ProgramMapping.ToMessage(p.Settings),
        Version = p.Version,
    };

    /// <summary>The wire kind of a ledger entry kind; a kind the wire does not know yet is UNSPECIFIED.</summary>
    public static V1.LedgerEntryKind ToMessage(LedgerEntryKind kind) => kind switch
    {
        LedgerEntryKind.Enrol => V1.LedgerEntryKind.Enrol,
        LedgerEntryKind.Earn => V1.LedgerEntryKind.Earn,
        LedgerEntryKind.ReferralLink => V1.LedgerEntryKind.ReferralLink,
        LedgerEntryKind.Return => V1.LedgerEntryKind.Return,
        LedgerEntryKind.Adjust => V1.LedgerEntryKind.Adjust,
        LedgerEntryKind.Flags => V1.LedgerEntryKind.Flags,
        LedgerEntryKind.Redeem => V1.LedgerEntryKind.Redeem,
        LedgerEntryKind.Reserve => V1.LedgerEntryKind.Reserve,
        LedgerEntryKind.ReservationEnd => V1.LedgerEntryKind.ReservationEnd,
        LedgerEntryKind.Expire => V1.LedgerEntryKind.Expire,
        LedgerEntryKind.ExpiryWarning => V1.LedgerEntryKind.ExpiryWarning,
        LedgerEntryKind.Referred => V1.LedgerEntryKind.Referred,
        LedgerEntryKind.ReferralReward => V1.LedgerEntryKind.ReferralReward,
        LedgerEntryKind.Profile => V1.LedgerEntryKind.Profile,
        LedgerEntryKind.Erase => V1.LedgerEntryKind.Erase,
        LedgerEntryKind.MergedAway => V1.LedgerEntryKind.MergedAway,
        LedgerEntryKind.MergedIn => V1.LedgerEntryKind.MergedIn,
        LedgerEntryKind.Repointed => V1.LedgerEntryKind.Repointed,
        LedgerEntryKind.ReferralSettled => V1.LedgerEntryKind.ReferralSettled,
        LedgerEntryKind.ReferralConfirmed => V1.LedgerEntryKind.ReferralConfirmed,
        LedgerEntryKind.ReferralWithdrawn => V1.LedgerEntryKind.ReferralWithdrawn,
        LedgerEntryKind.MergeStarted => V1.LedgerEntryKind.MergeStarted,
        LedgerEntryKind.MergeSettled => V1.LedgerEntryKind.MergeSettled,
        LedgerEntryKind.Feedback => V1.LedgerEntryKind.Feedback,
        LedgerEntryKind.BonusDayBooked => V1.LedgerEntryKind.BonusDayBooked,
        LedgerEntryKind.CauseChosen => V1.LedgerEntryKind.CauseChosen,
        LedgerEntryKind.Birthday => V1.LedgerEntryKind.Birthday,
        LedgerEntryKind.MembershipStarted => V1.LedgerEntryKind.MembershipStarted,
        LedgerEntryKind.MembershipRenewed => V1.LedgerEntryKind.MembershipRenewed,
        LedgerEntryKind.MembershipCancelled => V1.LedgerEntryKind.MembershipCancelled,
        LedgerEntryKind.MembershipLapsed => V1.LedgerEntryKind.MembershipLapsed,
        LedgerEntryKind.TradeInSubmitted => V1.LedgerEntryKind.TradeInSubmitted,
        LedgerEntryKind.TradeInAccepted => V1.LedgerEntryKind.TradeInAccepted,
        LedgerEntryKind.TradeInRejected => V1.LedgerEntryKind.TradeInRejected,
        LedgerEntryKind.TierReviewed => V1.LedgerEntryKind.TierReviewed,
        _ => V1.LedgerEntryKind.Unspecified,
    };

    /// <summary>The ledger entry message.</summary>
    public static V1.LedgerEntry ToMessage(LedgerEntry e) => new()
    {
        Sequence = e.Sequence,
        Kind = ToMessage(e.Kind),
        Points = e.Points.Value,
        TransactionId = e.TransactionId ?? "",
        StoreId = e.StoreId ?? "",
        AmountMinor = e.AmountMinor,
        Currency = e.Currency ?? "",
        Reason = e.Reason ?? (e.Kind == LedgerEntryKind.ReferralLink ? "referred " + e.Reference : ""),
        OccurredAt = Timestamp.FromDateTimeOffset(e.OccurredAt),
        RecordedAt = Timestamp.FromDateTimeOffset(e.RecordedAt),
        ProgramVersion = e.ProgramVersion,
        AvailableAt = e.AvailableAt is { } availableAt ? Timestamp.FromDateTimeOffset(availableAt) : null,
        Breakdown = e.Details is null ? null : ToBreakdown(e.Details),
        Reference = e.Reference ?? "",
        MemberId = e.MemberId,
    };
}
