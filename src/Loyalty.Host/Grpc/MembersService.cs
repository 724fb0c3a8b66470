using System.Globalization;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Member enrolment and queries over gRPC.</summary>
public sealed class MembersService(GrainReferences<IMemberGrain> members, ILogger<MembersService> logger) : V1.Members.MembersBase
{
    /// <inheritdoc />
    public override async Task<V1.EnrollResponse> Enroll(V1.EnrollRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        string? referredBy = request.ReferredBy.Length == 0 ? null : request.ReferredBy;
        string? code = request.ReferralCode.Length == 0 ? null : request.ReferralCode;
        GrainCalls.Require(referredBy is null ? null : LoyaltyIds.Check(referredBy, "referred_by"));
        GrainCalls.Require(code is null ? null : CheckCode(code));
        var enrolment = new Enrolment(request.ProgramId, request.MemberId, referredBy, code);
        EnrolmentResult result = await GrainCalls.RunAsync(() => member.Enrol(enrolment), logger, "Enroll");
        if (result.Member is null)
        {
            throw WireMapping.ToRpcException(result.Error, result.ErrorMessage);
        }

        return new V1.EnrollResponse { Member = WireMapping.ToMessage(result.Member), AlreadyEnrolled = result.AlreadyEnrolled };
    }

    /// <inheritdoc />
    public override async Task<V1.Member> GetMember(V1.GetMemberRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        MemberView? view = await GrainCalls.RunAsync(member.Get, logger, "GetMember");
        return view is null ? throw NotEnrolled(request.ProgramId, request.MemberId) : WireMapping.ToMessage(view);
    }

    /// <inheritdoc />
    public override async Task<V1.ListLedgerResponse> ListLedger(V1.ListLedgerRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        if (request.PageSize is < 0 or > Limits.LedgerPageSizeMax)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"page_size must be 0..{Limits.LedgerPageSizeMax}"));
        }

        // A token is "SEQ" (this member's entries before SEQ), or "MEMBER@SEQ" / "MEMBER@" in the
        // history of a duplicate merged into this member ('@' cannot occur in an id).
        (string? from, long? before) = ParsePageToken(request.PageToken);
        int size = request.PageSize == 0 ? Limits.LedgerPageSizeDefault : request.PageSize;
        LedgerPage? page = await GrainCalls.RunAsync(() => member.GetLedger(before, size, from), logger, "ListLedger")
            ?? throw NotEnrolled(request.ProgramId, request.MemberId);
        string sequence = page.NextBeforeSequence?.ToString(CultureInfo.InvariantCulture) ?? "";
        var response = new V1.ListLedgerResponse
        {
            NextPageToken = page.NextMember is null ? sequence : page.NextMember + "@" + sequence,
        };
        response.Entries.AddRange(page.Entries.Select(WireMapping.ToMessage));
        return response;
    }

    /// <inheritdoc />
    public override async Task<V1.Member> SetMemberFlags(V1.SetMemberFlagsRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        bool edit = request.AddFlags.Count > 0 || request.RemoveFlags.Count > 0;
        var change = new FlagChange(edit && request.Flags.Count == 0 ? null : [.. request.Flags], [.. request.AddFlags], [.. request.RemoveFlags]);
        GrainCalls.Require(change.Check());
        MemberResult result = await GrainCalls.RunAsync(() => member.ChangeFlags(change), logger, "SetMemberFlags");
        return result.Member is null
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToMessage(result.Member);
    }

    /// <inheritdoc />
    public override Task<V1.MembershipResponse> ConfirmMembershipPayment(V1.ConfirmMembershipPaymentRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        var payment = new MembershipPayment(request.PaymentId, request.PlanId, new Money(request.AmountMinor, request.Currency));
        GrainCalls.Require(payment.Check());
        return MembershipAsync(() => member.ConfirmMembershipPayment(payment), "ConfirmMembershipPayment");
    }

    /// <inheritdoc />
    public override Task<V1.MembershipResponse> StartMembershipTrial(V1.StartMembershipTrialRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        GrainCalls.Require(LoyaltyIds.Check(request.PlanId, "plan_id", Limits.CodeLengthMax));
        return MembershipAsync(() => member.StartMembershipTrial(request.PlanId), "StartMembershipTrial");
    }

    /// <inheritdoc />
    public override Task<V1.MembershipResponse> CancelMembership(V1.CancelMembershipRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        GrainCalls.Require(FreeText.Check(request.Reason, "reason", Limits.ReasonLengthMax));
        return MembershipAsync(() => member.CancelMembership(request.Reason), "CancelMembership");
    }

    private async Task<V1.MembershipResponse> MembershipAsync(Func<Task<MembershipResult>> call, string operation)
    {
        MembershipResult result = await GrainCalls.RunAsync(call, logger, operation);
        return result.Error != LoyaltyError.None
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : new V1.MembershipResponse
            {
                Membership = result.Membership is { } view ? WireMapping.ToMessage(view) : null,
                Status = (V1.AckStatus)(int)result.Status,
                Sequence = result.Sequence,
            };
    }

    /// <inheritdoc />
    public override Task<V1.TradeInResponse> SubmitTradeIn(V1.SubmitTradeInRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        var tradeIn = new TradeIn(request.TradeInId, request.Category, request.StoreId.Length == 0 ? null : request.StoreId);
        GrainCalls.Require(tradeIn.Check());
        return TradeInAsync(() => member.SubmitTradeIn(tradeIn), "SubmitTradeIn");
    }

    /// <inheritdoc />
    public override Task<V1.TradeInResponse> InspectTradeIn(V1.InspectTradeInRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        GrainCalls.Require(LoyaltyIds.Check(request.TradeInId, "trade_in_id")
            ?? (request.Condition is V1.TradeInCondition.Unspecified or > V1.TradeInCondition.Rejected ? "condition must be LIKE_NEW, GOOD, WORN or REJECTED" : null));
        string? store = Access.Caller.Of(context).StoreIfRestricted(request.StoreId);
        return TradeInAsync(() => member.InspectTradeIn(request.TradeInId, (TradeInCondition)(int)request.Condition, store), "InspectTradeIn");
    }

    private async Task<V1.TradeInResponse> TradeInAsync(Func<Task<TradeInResult>> call, string operation)
    {
        TradeInResult result = await GrainCalls.RunAsync(call, logger, operation);
        return result.Error != LoyaltyError.None
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : new V1.TradeInResponse
            {
                TradeInId = result.TradeInId,
                TradeInStatus = (V1.TradeInStatus)(int)result.TradeInStatus,
                Category = result.Category,
                Condition = (V1.TradeInCondition)(int)(result.Condition ?? 0),
                CreditMinor = result.CreditMinor,
                WalletMinor = result.WalletMinor,
                Status = (V1.AckStatus)(int)result.Status,
                Sequence = result.Sequence,
            };
    }

    /// <inheritdoc />
    public override async Task<V1.Member> ChooseCause(V1.ChooseCauseRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        string? cause = request.CauseId.Length == 0 ? null : request.CauseId;
        GrainCalls.Require(cause is null ? null : LoyaltyIds.Check(cause, "cause_id", Limits.CodeLengthMax));
        MemberResult result = await GrainCalls.RunAsync(() => member.ChooseCause(cause), logger, "ChooseCause");
        return result.Member is null
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToMessage(result.Member);
    }

    /// <inheritdoc />
    public override async Task<V1.BookBonusDayResponse> BookBonusDay(V1.BookBonusDayRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        DateOnly? day = WireMapping.ParseDay(request.Day, "day", out string? error);
        var booking = new BonusDayBooking(request.BookingId, day ?? default);
        GrainCalls.Require(error ?? booking.Check());
        BonusDayResult result = await GrainCalls.RunAsync(() => member.BookBonusDay(booking), logger, "BookBonusDay");
        if (result.Error != LoyaltyError.None)
        {
            throw WireMapping.ToRpcException(result.Error, result.ErrorMessage);
        }

        var response = new V1.BookBonusDayResponse { Day = WireMapping.IsoDay(result.Day), AlreadyBooked = result.AlreadyBooked, DaysLeft = result.DaysLeft, Sequence = result.Sequence };
        response.BookedDays.AddRange(result.Booked.Select(WireMapping.IsoDay));
        return response;
    }

    /// <inheritdoc />
    public override async Task<V1.AdjustPointsResponse> AdjustPoints(V1.AdjustPointsRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        var adjustment = new Adjustment(request.TransactionId, new Points(request.Points), request.Reason);
        GrainCalls.Require(adjustment.Check());
        AccrualResult result = await GrainCalls.RunAsync(() => member.Adjust(adjustment), logger, "AdjustPoints");
        return Answer(result);
    }

    /// <inheritdoc />
    public override async Task<V1.AdjustPointsResponse> RecordFeedback(V1.RecordFeedbackRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        var feedback = new Feedback(request.FeedbackId, request.Score, request.Comment.Length == 0 ? null : request.Comment, request.Channel.Length == 0 ? null : request.Channel);
        GrainCalls.Require(feedback.Check());
        AccrualResult result = await GrainCalls.RunAsync(() => member.RecordFeedback(feedback), logger, "RecordFeedback");
        return Answer(result);
    }

    private static V1.AdjustPointsResponse Answer(AccrualResult result) => result.Status == AccrualStatus.Rejected
        ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
        : new V1.AdjustPointsResponse
        {
            TransactionId = result.TransactionId,
            Status = result.Status == AccrualStatus.Accepted ? V1.AckStatus.Accepted : V1.AckStatus.Duplicate,
            Points = result.Earned.Value,
            Balance = result.Balance.Value,
            Sequence = result.Sequence,
        };

    /// <inheritdoc />
    public override async Task<V1.ReferralCodeResponse> GetReferralCode(V1.GetMemberRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        string? code = await GrainCalls.RunAsync(member.GetReferralCode, logger, "GetReferralCode");
        return code is null ? throw await NoCodeAsync(member, request) : new V1.ReferralCodeResponse { ReferralCode = code };
    }

    /// <summary>Why a member has no referral code: not enrolled, or closed (erased, merged away).</summary>
    private async Task<RpcException> NoCodeAsync(IMemberGrain member, V1.GetMemberRequest request)
    {
        MemberView? view = await GrainCalls.RunAsync(member.Get, logger, "GetReferralCode");
        return view switch
        {
            { MergedInto: { } survivor } => new RpcException(new Status(StatusCode.FailedPrecondition,
                $"member '{request.MemberId}' was merged into '{survivor}'; use '{survivor}'")),
            { Erased: true } => new RpcException(new Status(StatusCode.FailedPrecondition,
                $"member '{request.MemberId}' was erased and has no referral code")),
            _ => NotEnrolled(request.ProgramId, request.MemberId),
        };
    }

    /// <inheritdoc />
    public override async Task<V1.Member> SetReferrer(V1.SetReferrerRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        string? referredBy = request.ReferredBy.Length == 0 ? null : request.ReferredBy;
        string? code = request.ReferralCode.Length == 0 ? null : request.ReferralCode;
        GrainCalls.Require(referredBy is null && code is null ? "set referred_by or referral_code" : null);
        GrainCalls.Require(referredBy is null ? null : LoyaltyIds.Check(referredBy, "referred_by"));
        GrainCalls.Require(code is null ? null : CheckCode(code));
        MemberResult result = await GrainCalls.RunAsync(() => member.SetReferrer(referredBy, code), logger, "SetReferrer");
        return result.Member is null
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToMessage(result.Member);
    }

    /// <inheritdoc />
    public override async Task<V1.Member> SetProfile(V1.SetProfileRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        var fields = new Dictionary<string, string>(request.Fields, StringComparer.Ordinal);
        GrainCalls.Require(Profiles.Check(fields));
        return await MemberOrThrowAsync(() => member.SetProfile(fields), "SetProfile");
    }

    /// <inheritdoc />
    public override async Task<V1.Member> EraseMember(V1.EraseMemberRequest request, ServerCallContext context)
    {
        IMemberGrain member = Member(request.ProgramId, request.MemberId);
        GrainCalls.Require(string.IsNullOrWhiteSpace(request.Reason) ? "reason is required" : null);
        return await MemberOrThrowAsync(() => member.Erase(request.Reason), "EraseMember");
    }

    /// <inheritdoc />
    public override async Task<V1.Member> MergeMembers(V1.MergeMembersRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.SurvivorId, "survivor_id") ?? LoyaltyIds.Check(request.DuplicateId, "duplicate_id")
            ?? (string.IsNullOrWhiteSpace(request.Reason) ? "reason is required" : null));
        IMemberGrain survivor = Member(request.ProgramId, request.SurvivorId);
        return await MemberOrThrowAsync(() => survivor.MergeFrom(request.DuplicateId, request.Reason), "MergeMembers");
    }

    private async Task<V1.Member> MemberOrThrowAsync(Func<Task<MemberResult>> call, string operation)
    {
        MemberResult result = await GrainCalls.RunAsync(call, logger, operation);
        return result.Member is null
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToMessage(result.Member);
    }

    private static (string? Member, long? Before) ParsePageToken(string token)
    {
        if (token.Length == 0)
        {
            return (null, null);
        }

        int at = token.IndexOf('@', StringComparison.Ordinal);
        string? member = at < 0 ? null : token[..at];
        string sequence = at < 0 ? token : token[(at + 1)..];
        bool sequenceOk = sequence.Length == 0 && member is not null
            || long.TryParse(sequence, NumberStyles.None, CultureInfo.InvariantCulture, out long parsed) && parsed > 0;
        if (!sequenceOk || (member is not null && LoyaltyIds.Check(member, "page_token") is not null))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "page_token is malformed"));
        }

        return (member, sequence.Length == 0 ? null : long.Parse(sequence, CultureInfo.InvariantCulture));
    }

    private static string? CheckCode(string code)
    {
        ReferralCodes.Normalize(code, out string? error);
        return error;
    }

    private IMemberGrain Member(string programId, string memberId)
    {
        GrainCalls.Require(LoyaltyIds.Check(programId, "program_id") ?? LoyaltyIds.Check(memberId, "member_id"));
        return members.Get(programId, memberId);
    }

    private static RpcException NotEnrolled(string programId, string memberId) =>
        new(new Status(StatusCode.NotFound, $"member '{memberId}' is not enrolled in program '{programId}'"));
}
