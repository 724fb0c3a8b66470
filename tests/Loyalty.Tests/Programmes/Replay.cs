using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>Checks that members, as an engine serves them, are what their ledger alone rebuilds.</summary>
internal static class Replay
{
    /// <summary>
    /// Reads the members, stops the engine, deletes every member snapshot, starts a new engine on the
    /// same database (and clock), and asserts each member reads the same; returns the new engine.
    /// </summary>
    public static async Task<InProcessEngine> AssertRebuiltFromLedgerAsync(InProcessEngine engine, TimeProvider clock, string program, params string[] members)
    {
        var live = new Dictionary<string, V1.Member>();
        foreach (string member in members)
        {
            live[member] = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = program, MemberId = member });
        }

        await engine.DisposeAsync();
        await Sql.ExecuteAsync(engine.Storage, "DELETE FROM orleansstorage WHERE graintypestring LIKE '%member%'");
        InProcessEngine restarted = await InProcessEngine.StartAsync(engine.Storage, clock, "--Schedule:PollIntervalMs=50");
        foreach (string member in members)
        {
            Assert.Equal(live[member], await restarted.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = program, MemberId = member }));
        }

        return restarted;
    }
}
