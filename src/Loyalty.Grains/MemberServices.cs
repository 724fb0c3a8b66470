using Loyalty.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Serialization;
using Orleans.Storage;

namespace Loyalty.Grains;

/// <summary>
/// What every member grain uses, made once per engine: a member holds one reference to it
/// instead of a field per service. With a million members held, each field is 8 MB; so is the
/// snapshot store taken from here instead of through Orleans' <c>[PersistentState]</c>, whose
/// bridge, grain-state wrapper and lifecycle and migration registrations cost about 290 bytes
/// per activation (the member reads and writes its snapshot itself, see
/// <c>MemberGrain.LoadAsync</c> and <c>MemberGrain.WriteSnapshotAsync</c>).
/// </summary>
public sealed class MemberServices(
    LedgerCommitQueue ledger,
    ILedgerStore store,
    ProgramDirectory programs,
    EngineClock clock,
    IOptions<MemberOptions> options,
    IOptions<ScheduleOptions> schedule,
    DeepCopier<MemberState> copier,
    ILogger<MemberGrain> logger,
    FaultInjector faults,
    IServiceProvider services)
{
    /// <summary>The state name member snapshots are stored under (as <c>[PersistentState("member")]</c> stored them).</summary>
    public const string SnapshotStateName = "member";

    /// <summary>The shared ledger writer.</summary>
    public LedgerCommitQueue Ledger { get; } = ledger;

    /// <summary>The ledger, read directly when a member loads and for statements.</summary>
    public ILedgerStore Store { get; } = store;

    /// <summary>Programs' rules, cached.</summary>
    public ProgramDirectory Programs { get; } = programs;

    /// <summary>The engine's clock.</summary>
    public EngineClock Clock { get; } = clock;

    /// <summary>Member options.</summary>
    public MemberOptions Options { get; } = options.Value;

    /// <summary>Over how long members' expiry wakes are spread (see <see cref="Expiring.WakeLateBy"/>).</summary>
    public TimeSpan ExpirySpread { get; } = schedule.Value.ExpirySpread;

    /// <summary>Copies the state for a snapshot written while the member goes on.</summary>
    public DeepCopier<MemberState> Copier { get; } = copier;

    /// <summary>The member grains' logger.</summary>
    public ILogger<MemberGrain> Logger { get; } = logger;

    /// <summary>Faults injected by tests; none otherwise.</summary>
    public FaultInjector Faults { get; } = faults;

    /// <summary>Member warnings a second at most that clients can cause at will (see <see cref="Warnings"/>).</summary>
    public const int WarningLinesPerSecondMax = 5;

    /// <summary>
    /// The budget of member warnings that clients can cause at will, over every member of the
    /// silo: a change the ledger did not commit (a transaction id reused from further back than a
    /// member remembers is refused by the ledger, then the member reloads; an outage of the
    /// ledger is logged by the commit queue as well), an enrolment's referrer that cannot be
    /// linked. Counted on the system clock, not the rules' (which tests move by days).
    /// </summary>
    public LogBudget Warnings { get; } = new(WarningLinesPerSecondMax, TimeProvider.System);

    /// <summary>
    /// The budget of the referral settlements' warnings (a referrer that does not answer): a
    /// settlement is tried again on each purchase and return of its member as well as by the due
    /// work, so a referrer out of service for long would log a line for each. Apart from
    /// <see cref="Warnings"/>, so that a till's resends cannot crowd them out.
    /// </summary>
    public LogBudget SettlementWarnings { get; } = new(WarningLinesPerSecondMax, TimeProvider.System);

    /// <summary>
    /// The budget of the members' storage failures (a state that cannot be loaded, a snapshot that
    /// cannot be written): with the database down, every member called fails alike, and each would
    /// log its own line with a stack trace. Apart from <see cref="Warnings"/>, so that clients'
    /// warnings cannot crowd out an outage.
    /// </summary>
    public LogBudget StorageFailures { get; } = new(WarningLinesPerSecondMax, TimeProvider.System);

    /// <summary>How many program ids are kept one copy of; more programs than this are rare, and theirs are not shared.</summary>
    public const int SharedProgramIdsMax = 10_000;

    /// <summary>
    /// One copy of a program's id for all its members, instead of one per member cut from each
    /// grain's key.
    /// </summary>
    public SharedStrings ProgramIds { get; } = new(SharedProgramIdsMax);

    /// <summary>Where snapshots are kept: the grain storage named <see cref="StorageSiloBuilderExtensions.SnapshotStorageName"/>.</summary>
    public IGrainStorage Snapshots { get; } = services.GetRequiredKeyedService<IGrainStorage>(StorageSiloBuilderExtensions.SnapshotStorageName);
}
