using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Cluster;

/// <summary>
/// Single activation is not assumed. Two engines on one PostgreSQL that do not know of each other
/// (each its own one-node cluster: the extreme of a partitioned membership view) each activate the
/// same member, and are sent the same purchases and competing redemptions at the same moment. The
/// ledger's key (program, member, sequence) makes the second writer collide, reload and decide again:
/// no purchase is credited twice, no redemption overdraws, the sequence has no gap, and each engine's
/// next change answers the balance the ledger holds. Changes that touch two members (referral links,
/// merges) hold the program's lock in the database and read members as the ledger has them, so two
/// desks, one per engine, still make opposite requests one after the other.
/// </summary>
public sealed class DuplicateActivationTests(ITestOutputHelper output)
{
    private const string Program = "dup";
    private const int Rounds = 60;
    private const long PurchasePoints = 150;
    private const long CoffeePoints = 100;

    [Fact]
    public async Task OneMemberActiveOnTwoEnginesAtOnce_NeverDoubleCredits_NeverOverdraws_LeavesNoGap()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "dupact");
        await using InProcessEngine a = await InProcessEngine.StartAsync(storage);
        await using InProcessEngine b = await InProcessEngine.StartAsync(storage);
        var (programsA, membersA, tillA, desksA) = Clients(a);
        var (_, membersB, tillB, desksB) = Clients(b);
        V1.PutProgramRequest program = Wire.Program(Program);
        program.Settings.Rewards.Add(new V1.Reward { Id = "coffee", Name = "Coffee", Kind = V1.RewardKind.Product, PointsPrice = CoffeePoints, Sku = "COFFEE" });
        await programsA.PutProgramAsync(program);
        await membersA.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m" });
        // Both engines hold an activation of the member from here on.
        await membersA.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m" });
        await membersB.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "m" });

        var answeredPoints = new Dictionary<string, List<long>>();
        var redeemed = new HashSet<string>();
        var outcomes = new Dictionary<string, int>();
        for (int round = 0; round < Rounds; round++)
        {
            // The same purchase through both engines, and two redemptions that may not both fit, all at once.
            V1.Purchase purchase = Wire.Purchase(Program, "m", $"p{round}", PurchasePoints * 100);
            Task<V1.PurchaseAck>[] buys = [tillA.AccrueAsync(purchase).ResponseAsync, tillB.AccrueAsync(purchase).ResponseAsync];
            Task<V1.RedemptionAck>[] redeems =
            [
                desksA.RedeemAsync(Redeem($"ra{round}")).ResponseAsync,
                desksB.RedeemAsync(Redeem($"rb{round}")).ResponseAsync,
            ];
            foreach (Task<V1.PurchaseAck> buy in buys)
            {
                if (await Outcome(buy, outcomes) is { } ack)
                {
                    Collect(answeredPoints, ack.TransactionId, ack.PointsEarned);
                }
            }

            for (int i = 0; i < redeems.Length; i++)
            {
                if (await Outcome(redeems[i], outcomes) is not null)
                {
                    redeemed.Add(i == 0 ? $"ra{round}" : $"rb{round}");
                }
            }

            if (!answeredPoints.ContainsKey(purchase.TransactionId))
            {
                // Both answers were "retry": the till resends.
                Collect(answeredPoints, purchase.TransactionId, (await tillA.AccrueAsync(purchase)).PointsEarned);
            }
        }

        V1.PurchaseAck lastA = await tillA.AccrueAsync(Wire.Purchase(Program, "m", "last-a", 1_00));
        long ledgerAfterA = await Sql.SumPointsAsync(storage, Program, "m");
        V1.PurchaseAck lastB = await tillB.AccrueAsync(Wire.Purchase(Program, "m", "last-b", 1_00));
        long ledgerAfterB = await Sql.SumPointsAsync(storage, Program, "m");
        List<(long Seq, int Kind, long Points, string? Txn)> rows = await Sql.RowsAsync(storage,
            $"SELECT seq, kind, points, txn_id FROM ledger_entries WHERE program_id = '{Program}' AND member_id = 'm' ORDER BY seq",
            r => (r.GetInt64(0), (int)r.GetInt16(1), r.GetInt64(2), r.IsDBNull(3) ? null : r.GetString(3)));
        output.WriteLine($"{Rounds} rounds: outcomes {string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}"))}; {redeemed.Count} redemptions accepted; {rows.Count} ledger entries");

        Assert.Equal(Enumerable.Range(1, rows.Count).Select(i => (long)i), rows.Select(r => r.Seq));
        List<(long Seq, int Kind, long Points, string? Txn)> earns = [.. rows.Where(r => r.Kind == 2 && r.Txn!.StartsWith('p'))];
        Assert.Equal(Rounds, earns.Count);
        Assert.Equal(Rounds, earns.Select(e => e.Txn).Distinct().Count());
        Assert.All(earns, e => Assert.Equal(PurchasePoints, e.Points));
        Assert.All(answeredPoints, p => Assert.All(p.Value, points => Assert.Equal(PurchasePoints, points)));
        Assert.Equal(redeemed.Order(StringComparer.Ordinal), rows.Where(r => r.Kind == 7).Select(r => r.Txn!).Order(StringComparer.Ordinal));
        long running = 0;
        foreach ((long seq, _, long points, _) in rows)
        {
            running = checked(running + points);
            Assert.True(running >= 0, $"the balance went below zero at sequence {seq}");
        }

        // Both activations wrote: each engine's redemptions are in the ledger, and purchases were answered by both.
        Assert.Contains(redeemed, r => r.StartsWith("ra", StringComparison.Ordinal));
        Assert.Contains(redeemed, r => r.StartsWith("rb", StringComparison.Ordinal));
        Assert.Contains(answeredPoints, p => p.Value.Count == 2);
        Assert.Equal(ledgerAfterA, lastA.Balance);
        Assert.Equal(ledgerAfterB, lastB.Balance);
        Assert.True(outcomes.GetValueOrDefault("FailedPrecondition") > 0, "no redemption was ever refused for want of points: the test did not make them compete");
    }

    [Fact]
    public async Task OppositeLinksAndMerges_ThroughTwoEnginesAtOnce_NeverCloseACycleOrLosePoints()
    {
        const int pairs = 25;
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "duplinks");
        var a = new List<(string Kind, bool Ok)>();
        await using (InProcessEngine first = await InProcessEngine.StartAsync(storage))
        await using (InProcessEngine second = await InProcessEngine.StartAsync(storage))
        {
            var (programs, membersA, tillA, _) = Clients(first);
            var (_, membersB, _, _) = Clients(second);
            await programs.PutProgramAsync(Wire.Program(Program));
            for (int i = 0; i < pairs; i++)
            {
                foreach (string id in new[] { $"x{i}", $"y{i}", $"u{i}", $"v{i}" })
                {
                    await membersA.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = id });
                    if (id[0] is 'u' or 'v')
                    {
                        // Points to merge (a referrer is set only before the first purchase, so x and y buy nothing).
                        await tillA.AccrueAsync(Wire.Purchase(Program, id, "buy-" + id, 10_00));
                    }
                    // Both engines hold an activation of every member.
                    await membersB.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = id });
                }
            }

            for (int i = 0; i < pairs; i++)
            {
                // Each engine's desk takes one of two opposite requests, at the same moment.
                Task<V1.Member>[] links =
                [
                    membersA.SetReferrerAsync(new V1.SetReferrerRequest { ProgramId = Program, MemberId = $"x{i}", ReferredBy = $"y{i}" }).ResponseAsync,
                    membersB.SetReferrerAsync(new V1.SetReferrerRequest { ProgramId = Program, MemberId = $"y{i}", ReferredBy = $"x{i}" }).ResponseAsync,
                ];
                Task<V1.Member>[] merges =
                [
                    membersA.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = $"u{i}", DuplicateId = $"v{i}", Reason = "same person" }).ResponseAsync,
                    membersB.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = Program, SurvivorId = $"v{i}", DuplicateId = $"u{i}", Reason = "same person" }).ResponseAsync,
                ];
                foreach (Task<V1.Member> link in links)
                {
                    a.Add(("link", await Succeeded(link)));
                }

                foreach (Task<V1.Member> merge in merges)
                {
                    a.Add(("merge", await Succeeded(merge)));
                }
            }
        }

        // A third engine, started afterwards, reads every member from the ledger alone.
        await using InProcessEngine fresh = await InProcessEngine.StartAsync(storage);
        var (_, members, _, _) = Clients(fresh);
        output.WriteLine($"{pairs} pairs: links accepted {a.Count(o => o.Kind == "link" && o.Ok)}, merges accepted {a.Count(o => o.Kind == "merge" && o.Ok)}");
        for (int i = 0; i < pairs; i++)
        {
            V1.Member x = await members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"x{i}" });
            V1.Member y = await members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"y{i}" });
            Assert.False(x.ReferredBy == $"y{i}" && y.ReferredBy == $"x{i}", $"x{i} and y{i} refer each other");
            Assert.True(x.ReferredBy == $"y{i}" || y.ReferredBy == $"x{i}", $"neither link of pair {i} was made");

            V1.Member u = await members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"u{i}" });
            V1.Member v = await members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"v{i}" });
            Assert.True((u.MergedInto == $"v{i}") ^ (v.MergedInto == $"u{i}"), $"pair {i}: u merged into '{u.MergedInto}', v into '{v.MergedInto}'");
            Assert.Equal(20, u.Balance + v.Balance);
        }

        Assert.Equal(pairs, a.Count(o => o.Kind == "link" && o.Ok));
        Assert.Equal(pairs, a.Count(o => o.Kind == "merge" && o.Ok));
    }

    [Fact]
    public async Task LimitedStock_RedeemedThroughTwoEnginesAtOnce_IsNeverOversold()
    {
        const int stock = 10, members = 30;
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "dupstock");
        await using InProcessEngine a = await InProcessEngine.StartAsync(storage);
        await using InProcessEngine b = await InProcessEngine.StartAsync(storage);
        var (programs, membersA, tillA, desksA) = Clients(a);
        var (_, _, _, desksB) = Clients(b);
        V1.PutProgramRequest program = Wire.Program(Program);
        program.Settings.Rewards.Add(new V1.Reward { Id = "mug", Name = "Mug", Kind = V1.RewardKind.Product, PointsPrice = 10, Sku = "MUG", Stock = stock });
        await programs.PutProgramAsync(program);
        for (int m = 0; m < members; m++)
        {
            await membersA.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = $"s{m}" });
            await tillA.AccrueAsync(Wire.Purchase(Program, $"s{m}", $"buy-s{m}", 100_00));
        }

        // Every member asks for a mug through both engines at once: each engine has its own activation of the stock.
        List<Task<V1.RedemptionAck>> calls = [];
        for (int m = 0; m < members; m++)
        {
            calls.Add(desksA.RedeemAsync(new V1.RedeemRequest { TransactionId = $"ma{m}", ProgramId = Program, MemberId = $"s{m}", RewardId = "mug", StoreId = "store-1" }).ResponseAsync);
            calls.Add(desksB.RedeemAsync(new V1.RedeemRequest { TransactionId = $"mb{m}", ProgramId = Program, MemberId = $"s{m}", RewardId = "mug", StoreId = "store-1" }).ResponseAsync);
        }

        var outcomes = new Dictionary<string, int>();
        int accepted = 0;
        foreach (Task<V1.RedemptionAck> call in calls)
        {
            if (await Outcome(call, outcomes) is not null)
            {
                accepted++;
            }
        }

        long redeemedInLedger = await Sql.ScalarAsync(storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{Program}' AND kind = 7");
        output.WriteLine($"{calls.Count} redemptions of {stock} mugs: {accepted} accepted, {redeemedInLedger} in the ledger; outcomes {string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}"))}");
        Assert.True(redeemedInLedger <= stock, $"{redeemedInLedger} mugs were redeemed from a stock of {stock}");
        Assert.Equal(accepted, redeemedInLedger);
        Assert.True(accepted > 0, "no mug was redeemed at all");
    }

    private static async Task<bool> Succeeded(Task<V1.Member> call)
    {
        try
        {
            await call;
            return true;
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.FailedPrecondition or StatusCode.Unavailable)
        {
            return false;
        }
    }

    private static V1.RedeemRequest Redeem(string txn) => new() { TransactionId = txn, ProgramId = Program, MemberId = "m", RewardId = "coffee", StoreId = "store-1" };

    private static void Collect(Dictionary<string, List<long>> answers, string txn, long points)
    {
        if (!answers.TryGetValue(txn, out List<long>? list))
        {
            answers[txn] = list = [];
        }

        list.Add(points);
    }

    /// <summary>The answer, or null for a refusal, which must be "retry" (UNAVAILABLE) or "not enough points" (FAILED_PRECONDITION).</summary>
    private static async Task<T?> Outcome<T>(Task<T> call, Dictionary<string, int> outcomes)
        where T : class
    {
        try
        {
            T answer = await call;
            outcomes["OK"] = outcomes.GetValueOrDefault("OK") + 1;
            return answer;
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.FailedPrecondition)
        {
            outcomes[e.StatusCode.ToString()] = outcomes.GetValueOrDefault(e.StatusCode.ToString()) + 1;
            return null;
        }
    }

    private static (V1.ProgramAdmin.ProgramAdminClient, V1.Members.MembersClient, V1.Purchases.PurchasesClient, V1.Redemptions.RedemptionsClient) Clients(InProcessEngine engine) =>
        (new(engine.Invoker), new(engine.Invoker), new(engine.Invoker), new(engine.Invoker));
}
