using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Cluster;

/// <summary>The set-up and the verdict the cluster tests share: members placed on every node, and every purchase in the ledger once.</summary>
internal static class ClusterLedger
{
    /// <summary>Puts the program and enrols members m0, m1, … through the nodes in turn, so that they are placed on all of them.</summary>
    public static async Task EnrolAcrossAsync(IReadOnlyList<HostProcess> nodes, string program, int members)
    {
        await nodes[0].Programs.PutProgramAsync(Wire.Program(program));
        for (int m = 0; m < members; m++)
        {
            await nodes[m % nodes.Count].Members.EnrollAsync(new V1.EnrollRequest { ProgramId = program, MemberId = $"m{m}" });
        }
    }

    /// <summary>
    /// Every answered purchase is in the ledger exactly once, with the points its answer gave, nothing
    /// else is, and the members' balances (read through <paramref name="node"/>) equal the ledger.
    /// </summary>
    public static async Task AssertEachPurchaseOnceAsync(StorageOptions storage, string program, IReadOnlyDictionary<string, long> answered, int members, HostProcess node)
    {
        List<(string Txn, long Points)> rows = await Sql.RowsAsync(storage,
            $"SELECT txn_id, points FROM ledger_entries WHERE program_id = '{program}' AND kind = 2", r => (r.GetString(0), r.GetInt64(1)));
        Assert.Equal(answered.Count, rows.Count);
        Assert.Equal(answered.Count, rows.Select(r => r.Txn).Distinct().Count());
        Assert.All(rows, r => Assert.Equal(answered[r.Txn], r.Points));
        long balances = 0;
        for (int m = 0; m < members; m++)
        {
            balances += (await node.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = program, MemberId = $"m{m}" })).Balance;
        }

        Assert.Equal(rows.Sum(r => r.Points), balances);
    }
}
