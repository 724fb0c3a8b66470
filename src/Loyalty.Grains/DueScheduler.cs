using Loyalty.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>Tuning of the due scheduler. Bound from the <c>Schedule</c> configuration section.</summary>
public sealed class ScheduleOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Schedule";

    /// <summary>The shortest poll interval accepted, in milliseconds (a smaller setting is raised to it).</summary>
    public const int PollIntervalMsMin = 10;

    /// <summary>How often the silo looks for members with due work when the last look found few, in milliseconds.</summary>
    public int PollIntervalMs { get; set; } = 1_000;

    /// <summary>Most members claimed by one look.</summary>
    public int ClaimBatchMax { get; set; } = 256;

    /// <summary>How long a claim keeps other silos away from a member; a wake that fails is retried after it, in seconds.</summary>
    public int LeaseSeconds { get; set; } = 60;

    /// <summary>Most member wakes running at once.</summary>
    public int WakesInFlightMax { get; set; } = 16;

    /// <summary>The longest a member's write-off of expired points (or warning before it) is spread after its time, in seconds (a larger setting is lowered to it).</summary>
    public const int ExpirySpreadSecondsMax = 6 * 60 * 60;

    /// <summary>
    /// Over how long after a lot's expiry (or its warning's time) the members it concerns are
    /// woken, each at its own offset, in seconds; 0 wakes them all on the instant. Lifespans end at
    /// a program-local midnight, so without a spread one day's earners all fall due at once.
    /// Below a day, so a warning still comes before its expiry.
    /// </summary>
    public int ExpirySpreadSeconds { get; set; } = 30 * 60;

    /// <summary>The spread in effect: <see cref="ExpirySpreadSeconds"/> within 0 and <see cref="ExpirySpreadSecondsMax"/>.</summary>
    public TimeSpan ExpirySpread => TimeSpan.FromSeconds(Math.Clamp(ExpirySpreadSeconds, 0, ExpirySpreadSecondsMax));
}

/// <summary>
/// Wakes members whose due time has come, active or not: every silo polls the due schedule's
/// index for due rows, claims a batch with a lease and calls each member's
/// <see cref="IMemberGrain.Wake"/>. Nothing scans all members, and several silos sharing one
/// database never wake the same member twice for one due time.
/// </summary>
internal sealed partial class DueScheduler(
    ILedgerStore store,
    GrainReferences<IMemberGrain> members,
    EngineClock clock,
    IOptions<ScheduleOptions> options,
    ILogger<DueScheduler> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly ScheduleOptions _options = options.Value;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _loop;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DueScheduler), ServiceLifecycleStage.Active, Start, StopAsync);

    private Task Start(CancellationToken cancellationToken)
    {
        _loop = Task.Run(() => LoopAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
    }

    private async Task LoopAsync(CancellationToken cancel)
    {
        int batch = Math.Max(1, _options.ClaimBatchMax);
        TimeSpan interval = TimeSpan.FromMilliseconds(Math.Max(ScheduleOptions.PollIntervalMsMin, _options.PollIntervalMs));
        while (!cancel.IsCancellationRequested)
        {
            int claimed = 0;
            try
            {
                claimed = await WakeDueAsync(batch, cancel);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogPollFailed(e);
            }

            if (claimed < batch)
            {
                try
                {
                    await Task.Delay(interval, cancel);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task<int> WakeDueAsync(int batch, CancellationToken cancel)
    {
        DateTimeOffset now = clock.GetUtcNow();
        IReadOnlyList<DueMember> due = await store.ClaimDueAsync(now, now.AddSeconds(Math.Max(1, _options.LeaseSeconds)), batch, cancel);
        await Parallel.ForEachAsync(due, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.WakesInFlightMax), CancellationToken = cancel }, async (member, _) =>
        {
            try
            {
                await members.Get(member.ProgramId, member.MemberId).Wake();
            }
            catch (Exception e)
            {
                LogWakeFailed(e, member.ProgramId, member.MemberId);
            }
        });
        return due.Count;
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "The due schedule could not be read; trying again")]
    private partial void LogPollFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId} could not do its due work; it is retried when the claim's lease runs out")]
    private partial void LogWakeFailed(Exception exception, string programId, string memberId);
}
