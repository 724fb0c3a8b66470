using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.GrpcFloor;

/// <summary>What the load tester calls before its purchases, answered as the engine would be seen to answer, with nothing kept.</summary>
internal static class FloorSetUp
{
    internal sealed class Programs : V1.ProgramAdmin.ProgramAdminBase
    {
        public override Task<V1.Program> PutProgram(V1.PutProgramRequest request, ServerCallContext context) =>
            Task.FromResult(new V1.Program { ProgramId = request.ProgramId, Settings = request.Settings, Version = 1 });

        // The tester's readiness check: any answer of the server's own means it is up.
        public override Task<V1.Program> GetProgram(V1.GetProgramRequest request, ServerCallContext context) =>
            throw new RpcException(new Status(StatusCode.NotFound, $"the floor keeps no programs ('{request.ProgramId}')"));
    }

    internal sealed class Keys : V1.Access.AccessBase
    {
        public override Task<V1.CreatedKey> CreateKey(V1.CreateKeyRequest request, ServerCallContext context) =>
            Task.FromResult(new V1.CreatedKey { Key = new V1.ApiKey(), Secret = "floor" });
    }

    internal sealed class Members : V1.Members.MembersBase
    {
        public override Task<V1.EnrollResponse> Enroll(V1.EnrollRequest request, ServerCallContext context) =>
            Task.FromResult(new V1.EnrollResponse { Member = new V1.Member { ProgramId = request.ProgramId, MemberId = request.MemberId } });
    }
}
