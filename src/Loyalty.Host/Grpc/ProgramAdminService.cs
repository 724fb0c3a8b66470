using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>Program configuration over gRPC.</summary>
public sealed class ProgramAdminService(IGrainFactory grains, ILogger<ProgramAdminService> logger) : V1.ProgramAdmin.ProgramAdminBase
{
    /// <inheritdoc />
    public override async Task<V1.Program> PutProgram(V1.PutProgramRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id"));
        ProgramSettings? settings = ProgramMapping.ToSettings(request.Settings, out string? error);
        GrainCalls.Require(error ?? settings!.Check());
        GrainCalls.Require(request.HasExpectedVersion && request.ExpectedVersion < 0 ? "expected_version must be 0 or more (0: the program must not exist yet)" : null);
        long? expected = request.HasExpectedVersion ? request.ExpectedVersion : null;
        ProgramPut put = await GrainCalls.RunAsync(() => grains.GetGrain<IProgramGrain>(request.ProgramId).PutIfVersion(settings!, expected), logger, "PutProgram");
        return put.Config is { } config
            ? WireMapping.ToMessage(config)
            : throw new RpcException(new Status(StatusCode.FailedPrecondition, put.Refused is { } refused ? refused + "; nothing was changed"
                : put.CurrentVersion == 0
                ? $"expected_version {expected}: program '{request.ProgramId}' does not exist yet (expect 0 to create it); nothing was changed"
                : $"expected_version {expected} is stale: program '{request.ProgramId}' is at version {put.CurrentVersion}; read it again and reapply the change; nothing was changed"));
    }

    /// <inheritdoc />
    public override async Task<V1.Program> GetProgram(V1.GetProgramRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id"));
        ProgramConfig? config = await GrainCalls.RunAsync(() => grains.GetGrain<IProgramGrain>(request.ProgramId).Get(), logger, "GetProgram");
        return config is null
            ? throw new RpcException(new Status(StatusCode.NotFound, $"program '{request.ProgramId}' not found"))
            : WireMapping.ToMessage(config);
    }
}
