using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Redemption over gRPC: validate, map, call the member grain, map back.</summary>
public sealed class RedemptionsService(GrainReferences<IMemberGrain> members, ILogger<RedemptionsService> logger) : V1.Redemptions.RedemptionsBase
{
    /// <inheritdoc />
    public override Task<V1.RedemptionAck> Redeem(V1.RedeemRequest request, ServerCallContext context)
    {
        var redemption = new Redemption(request.TransactionId, request.RewardId, request.Quantity == 0 ? 1 : request.Quantity, Optional(request.StoreId));
        GrainCalls.Require(redemption.Check());
        return CallAsync(request.ProgramId, request.MemberId, m => m.Redeem(redemption), "Redeem");
    }

    /// <inheritdoc />
    public override Task<V1.RedemptionAck> Reserve(V1.ReserveRequest request, ServerCallContext context)
    {
        var reservation = new Redemption(request.ReservationId, request.RewardId, request.Quantity == 0 ? 1 : request.Quantity, Optional(request.StoreId));
        GrainCalls.Require(reservation.Check("reservation_id"));
        return CallAsync(request.ProgramId, request.MemberId, m => m.Reserve(reservation), "Reserve");
    }

    /// <inheritdoc />
    public override Task<V1.RedemptionAck> CommitReservation(V1.ReservationRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ReservationId, "reservation_id"));
        string? store = Access.Caller.Of(context).StoreIfRestricted(request.StoreId);
        return CallAsync(request.ProgramId, request.MemberId, m => m.CommitReservation(request.ReservationId, store), "CommitReservation");
    }

    /// <inheritdoc />
    public override Task<V1.RedemptionAck> CancelReservation(V1.ReservationRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ReservationId, "reservation_id"));
        string? store = Access.Caller.Of(context).StoreIfRestricted(request.StoreId);
        return CallAsync(request.ProgramId, request.MemberId, m => m.CancelReservation(request.ReservationId, store), "CancelReservation");
    }

    /// <inheritdoc />
    public override async Task<V1.ListRewardsResponse> ListRewards(V1.ListRewardsRequest request, ServerCallContext context)
    {
        IMemberGrain member = Checked(request.ProgramId, request.MemberId);
        RewardsView view = await GrainCalls.RunAsync(() => member.Rewards(), logger, "ListRewards") ?? throw NotEnrolled(request.ProgramId, request.MemberId);
        var response = new V1.ListRewardsResponse { AvailablePoints = view.Available.Value, Tier = view.Tier };
        response.Rewards.AddRange(view.Options.Where(o => !request.RedeemableOnly || o.Block == RewardBlock.None).Select(WireMapping.ToMessage));
        return response;
    }

    /// <inheritdoc />
    public override async Task<V1.ListReservationsResponse> ListReservations(V1.GetMemberRequest request, ServerCallContext context)
    {
        IMemberGrain member = Checked(request.ProgramId, request.MemberId);
        IReadOnlyList<OpenReservation> open = await GrainCalls.RunAsync(() => member.Reservations(), logger, "ListReservations") ?? throw NotEnrolled(request.ProgramId, request.MemberId);
        var response = new V1.ListReservationsResponse();
        response.Reservations.AddRange(open.Select(h => new V1.Reservation
        {
            ReservationId = h.ReservationId,
            RewardId = h.RewardId,
            Quantity = h.Quantity,
            Points = h.Points.Value,
            LapsesAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(h.LapsesAt),
        }));
        return response;
    }

    private IMemberGrain Checked(string programId, string memberId)
    {
        GrainCalls.Require(LoyaltyIds.Check(programId, "program_id") ?? LoyaltyIds.Check(memberId, "member_id"));
        return members.Get(programId, memberId);
    }

    private static RpcException NotEnrolled(string programId, string memberId) =>
        new(new Status(StatusCode.NotFound, $"member '{memberId}' is not enrolled in program '{programId}'"));

    private async Task<V1.RedemptionAck> CallAsync(string programId, string memberId, Func<IMemberGrain, Task<RedemptionResult>> call, string operation)
    {
        IMemberGrain member = Checked(programId, memberId);
        RedemptionResult result = await GrainCalls.RunAsync(() => call(member), logger, operation);
        return result.Status == AccrualStatus.Rejected
            ? throw WireMapping.ToRpcException(result.Error, result.ErrorMessage)
            : WireMapping.ToAck(result);
    }

    private static string? Optional(string value) => value.Length == 0 ? null : value;
}
