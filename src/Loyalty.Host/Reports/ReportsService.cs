using System.Globalization;
using Grpc.Core;
using Loyalty.Host.Grpc;
using Loyalty.Storage;
using Loyalty.Storage.Reports;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Reports;

/// <summary>Programme reports over gRPC: checks the period, reads two ranges of daily totals, builds the report.</summary>
public sealed class ReportsService(ILedgerStore ledger, IGrainFactory grains, Loyalty.Grains.EngineClock clock, ReportGate gate) : V1.Reports.ReportsBase
{
    /// <inheritdoc />
    public override async Task<V1.ProgramReport> GetProgramReport(V1.ProgramReportRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id"));
        DateOnly today = DateOnly.FromDateTime(clock.GetUtcNow().UtcDateTime);
        DateOnly to = request.To.Length == 0 ? today : Day(request.To, "to");
        to = to > today ? today : to;
        DateOnly from = request.From.Length == 0 ? DateOnly.FromDayNumber(Math.Max(0, to.DayNumber + 1 - ProgramReports.DefaultDays)) : Day(request.From, "from");
        GrainCalls.Require(from > to ? $"from {request.From} is after to {ProgramReports.Text(to)}"
            : to.DayNumber - from.DayNumber >= ProgramReports.DaysMax ? $"the period is longer than {ProgramReports.DaysMax} days"
            : !Enum.IsDefined(request.GroupBy) ? $"group_by {(int)request.GroupBy} is not a grouping"
            : null);
        V1.ReportGrouping grouping = request.GroupBy == V1.ReportGrouping.Unspecified
            ? ProgramReports.AutomaticGrouping(to.DayNumber - from.DayNumber + 1)
            : request.GroupBy;
        GrainCalls.Require(ProgramReports.PeriodCount(from, to, grouping) > ProgramReports.PeriodsMax
            ? $"the period has more than {ProgramReports.PeriodsMax} periods of group_by {grouping}; group by a longer period"
            : null);
        ProgramConfig program = await grains.GetGrain<IProgramGrain>(request.ProgramId).Get()
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"program '{request.ProgramId}' not found"));

        using ReportGate.Place place = gate.TryEnter(request.ProgramId)
            ?? throw new RpcException(new Status(StatusCode.ResourceExhausted,
                $"program '{request.ProgramId}' has {gate.Max} reports being computed on this node, as many as it may at once (Reports:ConcurrentPerProgramMax); retry when one is done"));
        IReadOnlyList<ReportTotal> before = await ledger.ReadTotalsAsync(request.ProgramId, DateOnly.MinValue.DayNumber, from.DayNumber, perDay: false, context.CancellationToken);
        IReadOnlyList<ReportTotal> days = await ledger.ReadTotalsAsync(request.ProgramId, from.DayNumber, to.DayNumber + 1, perDay: true, context.CancellationToken);
        V1.ProgramReport report;
        try
        {
            report = ProgramReports.Build(request.ProgramId, program.Settings, from, to, grouping, before, days, request.Csv);
        }
        catch (OverflowException)
        {
            throw new RpcException(new Status(StatusCode.OutOfRange, "a figure of this report does not fit 64 bits (the programme's totals or their money value are too large)"));
        }

        // Stock as it stands now (the catalogue is bounded: Limits.RewardsMax).
        foreach (Reward reward in program.Settings.RewardList.Where(r => r.Stock is not null))
        {
            long taken = await grains.GetGrain<IRewardStockGrain>(Reward.StockKey(request.ProgramId, reward.Id)).Taken();
            report.Stock.Add(new V1.RewardStock { RewardId = reward.Id, Stock = reward.Stock!.Value, Taken = taken, Left = Math.Max(0, reward.Stock.Value - taken) });
        }

        return report;
    }

    private static DateOnly Day(string text, string field) =>
        DateOnly.TryParseExact(text, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.None, out DateOnly day)
            ? day
            : throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} must be a day as YYYY-MM-DD, not '{Bounded.Echo(text)}'"));
}
