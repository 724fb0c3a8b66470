using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Grains;

/// <summary>
/// A stored snapshot that cannot be read, for a member with too few entries for a deactivation to
/// write one (an erased member, whose erasure rewrote it): the engine's default options, over gRPC.
/// </summary>
public sealed class UnreadableSnapshotTests
{
    private const string Program = "unreadable";

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AnUnreadableSnapshotOfAShortLedger_IsReplacedWhenTheMemberDeactivates(Backend backend)
    {
        StorageOptions db = TestDatabases.Create(backend, "unreadable");
        string row = $"FROM orleansstorage WHERE grainidextensionstring = '{LoyaltyIds.MemberKey(Program, "e")}'";
        string garbage = backend == Backend.Sqlite ? "X'00FF13370BADF00D'" : "'\\x00ff13370badf00d'::bytea";
        V1.Member before;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db))
        {
            await engine.Programs.PutProgramAsync(Wire.Program(Program));
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "e" });
            await engine.Purchases.AccrueAsync(Wire.Purchase(Program, "e", "e-1", 12_00));
            await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "e", Reason = "ticket 6" });
            before = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "e" });
        }

        await Sql.ExecuteAsync(db, $"UPDATE orleansstorage SET payloadbinary = {garbage} WHERE grainidextensionstring = '{LoyaltyIds.MemberKey(Program, "e")}'");
        V1.Member rebuilt;
        await using (InProcessEngine engine = await InProcessEngine.StartAsync(db))
        {
            rebuilt = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "e" });
        }

        Assert.Equal(before.ToString(), rebuilt.ToString());
        Assert.Equal(3, before.LastSequence);
        // Stopping the engine deactivated the member, which wrote its state over the unreadable row.
        Assert.Equal(0, await Sql.ScalarAsync(db, "SELECT count(*) " + row + $" AND payloadbinary = {garbage}"));
        Assert.Equal(1, await Sql.ScalarAsync(db, "SELECT count(*) " + row + " AND payloadbinary IS NOT NULL"));
    }
}
