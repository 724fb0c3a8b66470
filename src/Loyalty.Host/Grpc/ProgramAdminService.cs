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
        ProgramConfig config = await GrainCalls.RunAsync(() => grains.GetGrain<IProgramGrain>(request.ProgramId).Put(settings!), logger, "PutProgram");
        return WireMapping.ToMessage(config);
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
