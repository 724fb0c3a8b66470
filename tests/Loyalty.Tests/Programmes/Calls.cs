using Grpc.Core;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Programmes;

/// <summary>What the programme tests ask of an engine besides its calls: refusals, and waiting for the due schedule.</summary>
internal static class Calls
{
    private static readonly TimeSpan DueWaitMax = TimeSpan.FromSeconds(20);

    /// <summary>The call's refusal; fails the test when the call succeeds.</summary>
    public static async Task<RpcException> RefusedAsync<T>(Task<T> call) => await Assert.ThrowsAsync<RpcException>(() => call);

    /// <summary>Waits (at most 20 s) until the member's ledger holds <paramref name="count"/> entries of the kind, written in the background.</summary>
    public static async Task WaitForEntriesAsync(InProcessEngine engine, string program, string member, int kind, long count = 1)
    {
        DateTime until = DateTime.UtcNow + DueWaitMax;
        while (await EntriesAsync(engine, program, member, kind) < count)
        {
            Assert.True(DateTime.UtcNow < until, $"{member} has fewer than {count} entries of kind {kind} in time");
            await Task.Delay(50);
        }
    }

    /// <summary>The member's ledger entries of the kind.</summary>
    public static Task<long> EntriesAsync(InProcessEngine engine, string program, string member, int kind) =>
        Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{program}' AND member_id = '{member}' AND kind = {kind}");
}
