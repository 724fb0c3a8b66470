using Loyalty.Storage;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>
/// The epoch of the program's desk a call runs under (<see cref="ProgramLinksGrain"/>), carried in
/// Orleans' request context from the desk through every step it calls and every call those make.
/// </summary>
/// <remarks>
/// The desk holds the program's lock while a step runs; when the desk's engine dies, the lock
/// passes on, but a step running on another engine goes on. A member therefore refuses a change
/// from a desk older than one it has already answered (timestamp ordering, with the lock's epoch
/// as the timestamp): a newer desk's check read the member without the old step's write, so the
/// old step may no longer write it. Reads note the epoch too: a cycle check that read a member is
/// what an old step's write there would make stale. The epoch is read when a call arrives and
/// passed to its writes explicitly, never read at the write: work a step starts may outlive it and
/// carry the step's context with it, and its writes are not the step's.
/// <para>
/// Fenced: a member's referrer (the link's own entry, an enrolment with one), the referrer's side
/// of a link and its settling, and a merge until the duplicate lets go (its start, the letting go
/// and the write-offs of expired points before it, an abandonment). Not fenced: what completes a
/// merge once the duplicate has let go (it must end whatever desk asks, and the cycle checks
/// already follow it through <c>MergingFrom</c> and <c>MergedInto</c>).
/// </para>
/// <para>
/// What is noted lives in the member's activation, and a member deactivated, or a second
/// activation of it, between a newer desk's read and the old step's write does not know of the
/// read. So the write carries its epoch to the ledger too (<see cref="EntryFence"/>): on
/// PostgreSQL, where several engines share the lock, the batch leaves it out once the lock has a
/// newer holder, and the member, told of a collision, reads the latest epoch and refuses the step.
/// </para>
/// </remarks>
internal static class DeskEpoch
{
    private const string Key = "loyalty.desk";
    private const string ProgramKey = "loyalty.desk.program";

    /// <summary>
    /// The epoch this call runs under, of <paramref name="programId"/>'s desk; 0 outside the desk's
    /// changes. Epochs come from one sequence for every lock, so another program's would mean nothing here.
    /// </summary>
    public static long Current(string programId) =>
        RequestContext.Get(Key) is long epoch && RequestContext.Get(ProgramKey) is string program && program == programId ? epoch : 0;

    /// <summary>Runs the rest of the calling flow, and the calls it makes, under <paramref name="programId"/>'s desk's <paramref name="epoch"/>.</summary>
    public static void Enter(string programId, long epoch)
    {
        RequestContext.Set(ProgramKey, programId);
        RequestContext.Set(Key, epoch);
    }

    /// <summary>The name of a program's desk lock (<see cref="ILedgerStore.LockAsync"/>).</summary>
    public static string LockName(string programId) => "links/" + programId;
}
