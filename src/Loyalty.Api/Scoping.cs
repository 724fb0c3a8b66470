namespace Loyalty.Api.V1;

/// <summary>
/// A request about one program. The gateway compares <see cref="ProgramId"/> with the calling
/// key's program before the call reaches a grain, so that a key of one program can neither read
/// nor change another's. Every request of a program-scoped call implements it (a test checks).
/// </summary>
public interface IProgramScoped
{
    /// <summary>The program the request is about; empty where an operator addresses no program.</summary>
    string ProgramId { get; }
}

/// <summary>A request made at a store: a POS key restricted to some stores may send it only for those.</summary>
public interface IStoreScoped
{
    /// <summary>The store the request comes from.</summary>
    string StoreId { get; }
}

/// <summary>A request about one member, named in the audit trail.</summary>
public interface IMemberScoped
{
    /// <summary>The member the request is about.</summary>
    string MemberId { get; }
}

// The generated messages already have these properties; the declarations below only name the
// interfaces they satisfy.
public sealed partial class PutProgramRequest : IProgramScoped;

public sealed partial class GetProgramRequest : IProgramScoped;

public sealed partial class EnrollRequest : IProgramScoped, IMemberScoped;

public sealed partial class GetMemberRequest : IProgramScoped, IMemberScoped;

public sealed partial class ListLedgerRequest : IProgramScoped, IMemberScoped;

public sealed partial class SetMemberFlagsRequest : IProgramScoped, IMemberScoped;

public sealed partial class AdjustPointsRequest : IProgramScoped, IMemberScoped;

public sealed partial class SetReferrerRequest : IProgramScoped, IMemberScoped;

public sealed partial class SetProfileRequest : IProgramScoped, IMemberScoped;

public sealed partial class EraseMemberRequest : IProgramScoped, IMemberScoped;

public sealed partial class MergeMembersRequest : IProgramScoped;

public sealed partial class RedeemRequest : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class ReserveRequest : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class ReservationRequest : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class Purchase : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class ReturnRequest : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class CreateKeyRequest : IProgramScoped;

public sealed partial class ListKeysRequest : IProgramScoped;

public sealed partial class RevokeKeyRequest : IProgramScoped;

public sealed partial class ListAuditRequest : IProgramScoped;

public sealed partial class SubscribeRequest : IProgramScoped;

public sealed partial class CreateWebhookRequest : IProgramScoped;

public sealed partial class WebhookRequest : IProgramScoped;

public sealed partial class ListWebhooksRequest : IProgramScoped;

public sealed partial class UpdateWebhookRequest : IProgramScoped;

public sealed partial class RotateWebhookSecretRequest : IProgramScoped;

public sealed partial class ListWebhookDeliveriesRequest : IProgramScoped;

public sealed partial class RedeliverRequest : IProgramScoped;

public sealed partial class ProgramReportRequest : IProgramScoped;

public sealed partial class RecordFeedbackRequest : IProgramScoped, IMemberScoped;

public sealed partial class ListRewardsRequest : IProgramScoped, IMemberScoped;

public sealed partial class GetTransactionRequest : IProgramScoped, IMemberScoped;

public sealed partial class BookBonusDayRequest : IProgramScoped, IMemberScoped;

public sealed partial class ChooseCauseRequest : IProgramScoped, IMemberScoped;

public sealed partial class ConfirmMembershipPaymentRequest : IProgramScoped, IMemberScoped;

public sealed partial class StartMembershipTrialRequest : IProgramScoped, IMemberScoped;

public sealed partial class CancelMembershipRequest : IProgramScoped, IMemberScoped;

public sealed partial class SubmitTradeInRequest : IProgramScoped, IMemberScoped, IStoreScoped;

public sealed partial class InspectTradeInRequest : IProgramScoped, IMemberScoped, IStoreScoped;
