using System.Globalization;
using System.Text;
using Loyalty.Storage.Reports;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Reports;

/// <summary>
/// Builds a programme report from its daily totals: a pure function of the totals before the
/// period (the opening), the totals of each day in it, and the program's accounting settings.
/// </summary>
public static class ProgramReports
{
    /// <summary>Most periods one report answers (a ten-year report by day is refused; ask by month).</summary>
    public const int PeriodsMax = 1_000;

    /// <summary>Longest period a report covers, in days (a century).</summary>
    public const int DaysMax = 36_600;

    /// <summary>The default length of a report when no first day is given, in days.</summary>
    public const int DefaultDays = 30;

    /// <summary>The grouping for a period of <paramref name="days"/> days when none is asked for.</summary>
    public static V1.ReportGrouping AutomaticGrouping(int days) => days switch
    {
        <= 62 => V1.ReportGrouping.Day,
        <= 182 => V1.ReportGrouping.Week,
        <= 1_827 => V1.ReportGrouping.Month,
        _ => V1.ReportGrouping.Year,
    };

    /// <summary>The first day of the period (of <paramref name="grouping"/>) that holds <paramref name="day"/>.</summary>
    public static DateOnly PeriodStart(DateOnly day, V1.ReportGrouping grouping) => grouping switch
    {
        V1.ReportGrouping.Week => day.AddDays(-(((int)day.DayOfWeek + 6) % 7)),
        V1.ReportGrouping.Month => new DateOnly(day.Year, day.Month, 1),
        V1.ReportGrouping.Year => new DateOnly(day.Year, 1, 1),
        _ => day,
    };

    /// <summary>The last day of the period that starts on <paramref name="start"/>.</summary>
    public static DateOnly PeriodEnd(DateOnly start, V1.ReportGrouping grouping) => grouping switch
    {
        V1.ReportGrouping.Week => start.AddDays(6),
        V1.ReportGrouping.Month => start.AddMonths(1).AddDays(-1),
        V1.ReportGrouping.Year => start.AddYears(1).AddDays(-1),
        _ => start,
    };

    /// <summary>How many periods of <paramref name="grouping"/> the days from <paramref name="from"/> to <paramref name="to"/> span.</summary>
    public static int PeriodCount(DateOnly from, DateOnly to, V1.ReportGrouping grouping)
    {
        int count = 0;
        for (DateOnly start = PeriodStart(from, grouping); start <= to && count <= PeriodsMax; start = PeriodEnd(start, grouping).AddDays(1))
        {
            count++;
        }

        return count;
    }

    /// <summary>
    /// The report. <paramref name="before"/> holds the totals of every day before
    /// <paramref name="from"/> summed; <paramref name="days"/> the totals of each day from
    /// <paramref name="from"/> to <paramref name="to"/>, in day order.
    /// </summary>
    public static V1.ProgramReport Build(string programId, ProgramSettings settings, DateOnly from, DateOnly to, V1.ReportGrouping grouping,
        IReadOnlyList<ReportTotal> before, IReadOnlyList<ReportTotal> days, bool csv)
    {
        var running = new Running(settings.Accounting);
        foreach (ReportTotal t in before)
        {
            running.Add(t);
        }

        var report = new V1.ProgramReport
        {
            ProgramId = programId,
            From = Text(from),
            To = Text(to),
            GroupBy = grouping,
            Currency = settings.Currency,
            CurrencyExponent = settings.CurrencyExponent,
            PointValueMinorPerThousand = settings.Accounting?.PointValueMinorPerThousand ?? 0,
            Opening = running.Balances(),
        };
        var whole = new Flows();
        int next = 0;
        for (DateOnly start = from; start <= to; start = PeriodEnd(PeriodStart(start, grouping), grouping).AddDays(1))
        {
            DateOnly end = Min(PeriodEnd(PeriodStart(start, grouping), grouping), to);
            var flows = new Flows();
            for (; next < days.Count && days[next].Day <= end.DayNumber; next++)
            {
                flows.Add(days[next]);
                whole.Add(days[next]);
                running.Add(days[next]);
            }

            report.Periods.Add(flows.ToPeriod(start, end, running.Balances()));
        }

        report.Total = whole.ToPeriod(from, to, running.Balances());
        if (csv)
        {
            report.Csv = Csv(report.Periods);
        }

        return report;
    }

    /// <summary>A day as YYYY-MM-DD.</summary>
    public static string Text(DateOnly day) => day.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);

    private static DateOnly Min(DateOnly a, DateOnly b) => a < b ? a : b;

    /// <summary>The periods as CSV: one header line, one line per period, invariant number formats.</summary>
    public static string Csv(IEnumerable<V1.ReportPeriod> periods)
    {
        var csv = new StringBuilder();
        csv.Append("start,end,issued,issued_purchases,issued_bonuses,issued_signup,issued_referrals,issued_adjustments,deducted_adjustments,")
            .Append("reversed,redeemed,expired,merged_in,merged_out,redemptions_returned,other,net,pending_added,pending_matured,pending_reversed,")
            .Append("sales_minor,purchases,returned_minor,returns,enrolled,outstanding,pending,spendable,liability_minor,deferred_revenue_minor,")
            .Append("breakage_bp,breakage_observed,matured_redeemed,matured_expired,members\n");
        foreach (V1.ReportPeriod p in periods)
        {
            V1.PointFlows f = p.Flows;
            V1.ProgramBalances b = p.Closing;
            object[] cells =
            [
                p.Start, p.End, f.Issued, f.IssuedPurchases, f.IssuedBonuses, f.IssuedSignup, f.IssuedReferrals, f.IssuedAdjustments, f.DeductedAdjustments,
                f.Reversed, f.Redeemed, f.Expired, f.MergedIn, f.MergedOut, f.RedemptionsReturned, f.Other, f.Net, f.PendingAdded, f.PendingMatured, f.PendingReversed,
                f.SalesMinor, f.Purchases, f.ReturnedMinor, f.Returns, f.Enrolled, b.Outstanding, b.Pending, b.Spendable, b.LiabilityMinor, b.DeferredRevenueMinor,
                b.BreakageBp, b.BreakageObserved ? "true" : "false", b.MaturedRedeemed, b.MaturedExpired, b.Members,
            ];
            csv.AppendJoin(',', cells.Select(c => Convert.ToString(c, CultureInfo.InvariantCulture))).Append('\n');
        }

        return csv.ToString();
    }

    /// <summary>One period's flows, summed from its days.</summary>
    private sealed class Flows
    {
        private readonly Dictionary<ReportMetric, long> _metrics = [];
        private readonly SortedDictionary<string, long> _redeemed = new(StringComparer.Ordinal);

        public void Add(ReportTotal t)
        {
            _metrics[t.Metric] = checked(_metrics.GetValueOrDefault(t.Metric) + t.Value);
            if (t.Metric == ReportMetric.Redeemed)
            {
                _redeemed[t.Key] = checked(_redeemed.GetValueOrDefault(t.Key) + t.Value);
            }
        }

        public V1.ReportPeriod ToPeriod(DateOnly start, DateOnly end, V1.ProgramBalances closing)
        {
            long M(ReportMetric metric) => _metrics.GetValueOrDefault(metric);
            var flows = new V1.PointFlows
            {
                IssuedPurchases = M(ReportMetric.IssuedPurchases),
                IssuedBonuses = M(ReportMetric.IssuedBonuses),
                IssuedSignup = M(ReportMetric.IssuedSignup),
                IssuedReferrals = M(ReportMetric.IssuedReferrals),
                IssuedAdjustments = M(ReportMetric.IssuedAdjustments),
                DeductedAdjustments = M(ReportMetric.DeductedAdjustments),
                Reversed = M(ReportMetric.Reversed),
                Redeemed = M(ReportMetric.Redeemed),
                Expired = M(ReportMetric.Expired),
                MergedIn = M(ReportMetric.MergedIn),
                MergedOut = M(ReportMetric.MergedOut),
                RedemptionsReturned = M(ReportMetric.RedemptionsReturned),
                Other = M(ReportMetric.Other),
                PendingAdded = M(ReportMetric.PendingAdded),
                PendingMatured = M(ReportMetric.PendingMatured),
                PendingReversed = M(ReportMetric.PendingReversed),
                SalesMinor = M(ReportMetric.Sales),
                Purchases = M(ReportMetric.Purchases),
                ReturnedMinor = M(ReportMetric.ReturnedSales),
                Returns = M(ReportMetric.Returns),
                Enrolled = M(ReportMetric.Enrolled),
            };
            flows.Issued = checked(flows.IssuedPurchases + flows.IssuedBonuses + flows.IssuedSignup + flows.IssuedReferrals + flows.IssuedAdjustments);
            flows.Net = _metrics.Sum(m => checked(ReportFacts.SignOf(m.Key) * m.Value));
            var period = new V1.ReportPeriod { Start = Text(start), End = Text(end), Flows = flows, Closing = closing };
            period.RedeemedByReward.AddRange(_redeemed.Select(r => new V1.RewardPoints { RewardId = r.Key, Points = r.Value }));
            return period;
        }
    }

    /// <summary>The programme's position, added up day by day.</summary>
    private sealed class Running(AccountingPolicy? accounting)
    {
        private long _outstanding, _pending, _members, _maturedRedeemed, _maturedExpired;

        public void Add(ReportTotal t)
        {
            _outstanding = checked(_outstanding + (ReportFacts.SignOf(t.Metric) * t.Value));
            switch (t.Metric)
            {
                case ReportMetric.PendingAdded: _pending = checked(_pending + t.Value); break;
                case ReportMetric.PendingMatured or ReportMetric.PendingReversed: _pending = checked(_pending - t.Value); break;
                case ReportMetric.Enrolled: _members = checked(_members + t.Value); break;
                case ReportMetric.CohortRedeemed: _maturedRedeemed = checked(_maturedRedeemed + t.Value); break;
                case ReportMetric.CohortExpired: _maturedExpired = checked(_maturedExpired + t.Value); break;
            }
        }

        public V1.ProgramBalances Balances()
        {
            // Redemptions given back can leave a cohort's sum below zero for a while; a rate is of what remains.
            long redeemed = Math.Max(0, _maturedRedeemed), expired = Math.Max(0, _maturedExpired);
            bool observed = redeemed + expired > 0;
            int breakageBp = observed ? (int)Math.Round(expired * (decimal)Multipliers.One / (redeemed + expired), MidpointRounding.AwayFromZero) : accounting?.ExpectedBreakageBp ?? 0;
            long liability = Scale(_outstanding, accounting?.PointValueMinorPerThousand ?? 0, 1_000);
            return new V1.ProgramBalances
            {
                Outstanding = _outstanding,
                Pending = _pending,
                Spendable = checked(_outstanding - _pending),
                LiabilityMinor = liability,
                DeferredRevenueMinor = Scale(liability, Multipliers.One - breakageBp, Multipliers.One),
                BreakageBp = breakageBp,
                BreakageObserved = observed,
                MaturedRedeemed = _maturedRedeemed,
                MaturedExpired = _maturedExpired,
                Members = _members,
            };
        }

        /// <summary>value × numerator ÷ denominator, rounded half away from zero; checked.</summary>
        private static long Scale(long value, long numerator, long denominator)
        {
            Int128 product = (Int128)value * numerator;
            Int128 half = denominator / 2;
            return checked((long)((product + (product < 0 ? -half : half)) / denominator));
        }
    }
}
