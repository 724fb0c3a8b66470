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

    /// <summary>Longest period a report covers, in days (ten years): it bounds the daily totals one report reads.</summary>
    public const int DaysMax = 3_661;

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
        TierLadder tiers = settings.Ladder;
        foreach (ReportTotal t in before)
        {
            running.Add(AsTiersAreNamedNow(t, tiers));
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
        List<string> ladder = [.. settings.Ladder.Tiers.Select(t => t.Name)];
        int next = 0;
        for (DateOnly start = from; start <= to; start = PeriodEnd(PeriodStart(start, grouping), grouping).AddDays(1))
        {
            DateOnly end = Min(PeriodEnd(PeriodStart(start, grouping), grouping), to);
            var flows = new Flows();
            for (; next < days.Count && days[next].Day <= end.DayNumber; next++)
            {
                ReportTotal day = AsTiersAreNamedNow(days[next], tiers);
                flows.Add(day);
                whole.Add(day);
                running.Add(day);
            }

            // A period cut short by the report's last day stays exact; one cut short by its first does not (see ExactKind).
            report.Periods.Add(flows.ToPeriod(start, end, running, KindOf(grouping), start == PeriodStart(start, grouping), ladder));
        }

        PurchaseActivity.Period? exact = ExactKind(from, to);
        report.Total = whole.ToPeriod(from, to, running, exact ?? KindOf(grouping), exact is not null, ladder);
        if (csv)
        {
            report.Csv = Csv(report.Periods);
        }

        return report;
    }

    /// <summary>The activity counts that match a grouping.</summary>
    private static PurchaseActivity.Period KindOf(V1.ReportGrouping grouping) => grouping switch
    {
        V1.ReportGrouping.Week => PurchaseActivity.Period.Week,
        V1.ReportGrouping.Month => PurchaseActivity.Period.Month,
        V1.ReportGrouping.Year => PurchaseActivity.Period.Year,
        _ => PurchaseActivity.Period.Day,
    };

    /// <summary>
    /// The finest kind of calendar period whose counts of active and repeat members are exact for
    /// <paramref name="from"/>..<paramref name="to"/>, or null. The member grain marks a purchase as
    /// its member's first or second of its day, week, month and year; when the days start such a
    /// period and end within it, the marks on those days count each member who bought in them
    /// once, and each who bought twice once. Days that start mid-period are not exact: a member
    /// whose first purchase of the month came before them is a repeat but not active.
    /// </summary>
    private static PurchaseActivity.Period? ExactKind(DateOnly from, DateOnly to)
    {
        foreach (V1.ReportGrouping grouping in (V1.ReportGrouping[])[V1.ReportGrouping.Day, V1.ReportGrouping.Week, V1.ReportGrouping.Month, V1.ReportGrouping.Year])
        {
            if (PeriodStart(from, grouping) == from && to <= PeriodEnd(from, grouping))
            {
                return KindOf(grouping);
            }
        }

        return null;
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
            .Append("breakage_bp,breakage_observed,matured_redeemed,matured_expired,members,")
            .Append("active,repeat,active_exact,participation_bp,repeat_rate_bp,first_time_sales_minor,returning_sales_minor,average_order_minor,")
            .Append("lifetime_value_minor,referrals_made,referrals_qualified,upgrades,downgrades,issued_feedback,nps_responses,nps,")
            .Append("store_credit_issued_minor,store_credit_spent_minor,store_credit_refunded_minor,store_credit_minor\n");
        foreach (V1.ReportPeriod p in periods)
        {
            V1.PointFlows f = p.Flows;
            V1.ProgramBalances b = p.Closing;
            V1.MemberFigures m = p.Members;
            object[] cells =
            [
                p.Start, p.End, f.Issued, f.IssuedPurchases, f.IssuedBonuses, f.IssuedSignup, f.IssuedReferrals, f.IssuedAdjustments, f.DeductedAdjustments,
                f.Reversed, f.Redeemed, f.Expired, f.MergedIn, f.MergedOut, f.RedemptionsReturned, f.Other, f.Net, f.PendingAdded, f.PendingMatured, f.PendingReversed,
                f.SalesMinor, f.Purchases, f.ReturnedMinor, f.Returns, f.Enrolled, b.Outstanding, b.Pending, b.Spendable, b.LiabilityMinor, b.DeferredRevenueMinor,
                b.BreakageBp, b.BreakageObserved ? "true" : "false", b.MaturedRedeemed, b.MaturedExpired, b.Members,
                m.Active, m.HasRepeat ? m.Repeat : "", m.ActiveExact ? "true" : "false", m.HasParticipationBp ? m.ParticipationBp : "", m.HasRepeatRateBp ? m.RepeatRateBp : "", m.FirstTimeSalesMinor, m.ReturningSalesMinor, m.AverageOrderMinor,
                m.LifetimeValueMinor, m.ReferralsMade, m.ReferralsQualified, m.Upgrades, m.Downgrades, f.IssuedFeedback, p.Nps.Responses, p.Nps.Nps,
                p.StoreCredit?.IssuedMinor ?? 0, p.StoreCredit?.SpentMinor ?? 0, p.StoreCredit?.RefundedMinor ?? 0, b.StoreCreditMinor,
            ];
            csv.AppendJoin(',', cells.Select(c => Convert.ToString(c, CultureInfo.InvariantCulture))).Append('\n');
        }

        return csv.ToString();
    }

    /// <summary>
    /// A total keyed by a tier, under the tier's name in the program's ladder now: members keep
    /// the name their tier had when they last changed, and a renamed tier's old name counts as it
    /// (see <see cref="TierLadder.Renamed"/>), so one tier is one row.
    /// </summary>
    private static ReportTotal AsTiersAreNamedNow(ReportTotal t, TierLadder ladder) => t.Metric switch
    {
        ReportMetric.TierEntered or ReportMetric.TierLeft or ReportMetric.NpsPromoters or ReportMetric.NpsPassives or ReportMetric.NpsDetractors when !ladder.Has(t.Key)
            => t with { Key = ladder.Resolve(t.Key) },
        ReportMetric.TierMoves when t.Key.Split('>') is [var from, var to] && !(ladder.Has(from) && ladder.Has(to))
            => t with { Key = ladder.Resolve(from) + ">" + ladder.Resolve(to) },
        _ => t,
    };

    /// <summary>One period's flows, summed from its days.</summary>
    private sealed class Flows
    {
        private readonly Dictionary<ReportMetric, long> _metrics = [];
        private readonly SortedDictionary<(ReportMetric Metric, string Key), long> _keyed = new(KeyOrder.Instance);

        public void Add(ReportTotal t)
        {
            _metrics[t.Metric] = checked(_metrics.GetValueOrDefault(t.Metric) + t.Value);
            if (t.Metric is ReportMetric.Redeemed or ReportMetric.RedeemedUnits or ReportMetric.RedeemedValue or ReportMetric.Donated or ReportMetric.Donations or ReportMetric.Given or ReportMetric.TierMoves or ReportMetric.TierEntered or ReportMetric.TierLeft
                or ReportMetric.NpsPromoters or ReportMetric.NpsPassives or ReportMetric.NpsDetractors)
            {
                _keyed[(t.Metric, t.Key)] = checked(_keyed.GetValueOrDefault((t.Metric, t.Key)) + t.Value);
            }
        }

        private long M(ReportMetric metric) => _metrics.GetValueOrDefault(metric);

        private IEnumerable<(string Key, long Value)> Keyed(ReportMetric metric) =>
            _keyed.Where(k => k.Key.Metric == metric).Select(k => (k.Key.Key, k.Value));

        public V1.ReportPeriod ToPeriod(DateOnly start, DateOnly end, Running running, PurchaseActivity.Period activity, bool activeExact, List<string> ladder)
        {
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
                IssuedFeedback = M(ReportMetric.IssuedFeedback),
            };
            flows.Issued = checked(flows.IssuedPurchases + flows.IssuedBonuses + flows.IssuedSignup + flows.IssuedReferrals + flows.IssuedAdjustments + flows.IssuedFeedback);
            flows.Net = _metrics.Sum(m => checked(ReportFacts.SignOf(m.Key) * m.Value));
            V1.ProgramBalances closing = running.Balances();
            var period = new V1.ReportPeriod { Start = Text(start), End = Text(end), Flows = flows, Closing = closing, Members = Members(running, closing, activity, activeExact, ladder), Nps = Nps(ladder) };
            period.StoreCredit = new V1.StoreCreditFlows
            {
                IssuedMinor = M(ReportMetric.StoreCreditIssued),
                SpentMinor = M(ReportMetric.StoreCreditSpent),
                RefundedMinor = M(ReportMetric.StoreCreditRefunded),
            };
            period.RedeemedByReward.AddRange(Keyed(ReportMetric.Redeemed).Select(r => new V1.RewardPoints
            {
                RewardId = r.Key,
                Points = r.Value,
                Units = _keyed.GetValueOrDefault((ReportMetric.RedeemedUnits, r.Key)),
                ValueMinor = _keyed.GetValueOrDefault((ReportMetric.RedeemedValue, r.Key)),
            }));
            period.Donations.AddRange(Keyed(ReportMetric.Donated).Concat(Keyed(ReportMetric.Given)).Select(d => d.Key).Distinct().Order(StringComparer.Ordinal)
                .Select(cause => new V1.CauseDonations
                {
                    Cause = cause,
                    AmountMinor = _keyed.GetValueOrDefault((ReportMetric.Donated, cause)),
                    Donations = _keyed.GetValueOrDefault((ReportMetric.Donations, cause)),
                    GivenMinor = _keyed.GetValueOrDefault((ReportMetric.Given, cause)),
                }));
            return period;
        }

        private V1.NpsFigures Nps(List<string> ladder)
        {
            var tiers = new SortedDictionary<string, (long Promoters, long Passives, long Detractors)>(StringComparer.Ordinal);
            foreach ((ReportMetric metric, int slot) in (ReadOnlySpan<(ReportMetric, int)>)[(ReportMetric.NpsPromoters, 0), (ReportMetric.NpsPassives, 1), (ReportMetric.NpsDetractors, 2)])
            {
                foreach ((string tier, long count) in Keyed(metric))
                {
                    (long p, long q, long d) = tiers.GetValueOrDefault(tier);
                    tiers[tier] = slot switch { 0 => (p + count, q, d), 1 => (p, q + count, d), _ => (p, q, d + count) };
                }
            }

            var nps = new V1.NpsFigures
            {
                Promoters = M(ReportMetric.NpsPromoters),
                Passives = M(ReportMetric.NpsPassives),
                Detractors = M(ReportMetric.NpsDetractors),
            };
            nps.Responses = checked(nps.Promoters + nps.Passives + nps.Detractors);
            nps.Nps = Score(nps.Promoters, nps.Detractors, nps.Responses);
            foreach ((string tier, (long p, long q, long d)) in tiers.OrderBy(t => ladder.IndexOf(t.Key) is var i and >= 0 ? i : int.MaxValue))
            {
                nps.Tiers.Add(new V1.TierNps { Tier = tier, Promoters = p, Passives = q, Detractors = d, Responses = p + q + d, Nps = Score(p, d, p + q + d) });
            }

            return nps;
        }

        /// <summary>% promoters − % detractors, to two decimals; 0 without answers.</summary>
        private static double Score(long promoters, long detractors, long responses) =>
            responses == 0 ? 0 : (double)Math.Round((promoters - detractors) * 100m / responses, 2, MidpointRounding.AwayFromZero);

        private V1.MemberFigures Members(Running running, V1.ProgramBalances closing, PurchaseActivity.Period activity, bool activeExact, List<string> ladder)
        {
            long active = M(ReportMetric.ActiveDay + (short)activity), repeat = M(ReportMetric.RepeatDay + (short)activity);
            long sales = M(ReportMetric.Sales), firstTime = M(ReportMetric.FirstTimeSales);
            var figures = new V1.MemberFigures
            {
                Active = active,
                ActiveExact = activeExact,
                FirstTimePurchases = M(ReportMetric.FirstTimePurchases),
                FirstTimeSalesMinor = firstTime,
                ReturningSalesMinor = checked(sales - firstTime),
                AverageOrderMinor = Divide(sales, M(ReportMetric.Purchases)),
                LifetimeValueMinor = Divide(running.NetSales, closing.Members),
                ReferralsMade = M(ReportMetric.ReferralsMade),
                ReferralsQualified = M(ReportMetric.ReferralsQualified),
                ReferralConversionBp = Ratio(M(ReportMetric.ReferralsQualified), M(ReportMetric.ReferralsMade)),
            };
            if (activeExact)
            {
                figures.Repeat = repeat;
                figures.ParticipationBp = Ratio(active, closing.Members);
                figures.RepeatRateBp = Ratio(repeat, active);
                figures.RevenuePerActiveMemberMinor = Divide(sales, active);
            }

            foreach ((string move, long count) in Keyed(ReportMetric.TierMoves))
            {
                string[] ends = move.Split('>');
                int up = ladder.IndexOf(ends[^1]).CompareTo(ladder.IndexOf(ends[0]));
                figures.Upgrades += up > 0 ? count : 0;
                figures.Downgrades += up < 0 ? count : 0;
            }

            figures.Tiers.AddRange(running.Tiers(ladder).Select(t => new V1.TierMembers
            {
                Tier = t.Tier,
                Members = t.Members,
                Entered = _keyed.GetValueOrDefault((ReportMetric.TierEntered, t.Tier)),
                Left = _keyed.GetValueOrDefault((ReportMetric.TierLeft, t.Tier)),
            }));
            return figures;
        }
    }

    /// <summary>a / b in basis points, rounded half away from zero; 0 when b is not positive.</summary>
    private static int Ratio(long a, long b) =>
        b <= 0 ? 0 : (int)Math.Clamp(Math.Round(a * (decimal)Multipliers.One / b, MidpointRounding.AwayFromZero), int.MinValue, int.MaxValue);

    /// <summary>a / b rounded half away from zero; 0 when b is not positive.</summary>
    private static long Divide(long a, long b) => b <= 0 ? 0 : (long)Math.Round(a / (decimal)b, MidpointRounding.AwayFromZero);

    /// <summary>Metric first, then key, ordinal.</summary>
    private sealed class KeyOrder : IComparer<(ReportMetric Metric, string Key)>
    {
        public static readonly KeyOrder Instance = new();

        public int Compare((ReportMetric Metric, string Key) x, (ReportMetric Metric, string Key) y) =>
            x.Metric != y.Metric ? x.Metric.CompareTo(y.Metric) : string.CompareOrdinal(x.Key, y.Key);
    }

    /// <summary>The programme's position, added up day by day.</summary>
    private sealed class Running(AccountingPolicy? accounting)
    {
        private readonly Dictionary<string, long> _tiers = new(StringComparer.Ordinal);
        private long _outstanding, _pending, _members, _maturedRedeemed, _maturedExpired, _storeCredit;

        /// <summary>Sales less returns, from the programme's start.</summary>
        public long NetSales { get; private set; }

        /// <summary>Members per tier: the ladder's tiers in order, then any other tier still held (renamed or removed).</summary>
        public IEnumerable<(string Tier, long Members)> Tiers(List<string> ladder) =>
            ladder.Select(t => (t, _tiers.GetValueOrDefault(t)))
                .Concat(_tiers.Where(t => !ladder.Contains(t.Key) && t.Value != 0).OrderBy(t => t.Key, StringComparer.Ordinal).Select(t => (t.Key, t.Value)));

        public void Add(ReportTotal t)
        {
            _outstanding = checked(_outstanding + (ReportFacts.SignOf(t.Metric) * t.Value));
            switch (t.Metric)
            {
                case ReportMetric.Sales: NetSales = checked(NetSales + t.Value); break;
                case ReportMetric.ReturnedSales: NetSales = checked(NetSales - t.Value); break;
                case ReportMetric.TierEntered: _tiers[t.Key] = checked(_tiers.GetValueOrDefault(t.Key) + t.Value); break;
                case ReportMetric.TierLeft: _tiers[t.Key] = checked(_tiers.GetValueOrDefault(t.Key) - t.Value); break;
                case ReportMetric.PendingAdded: _pending = checked(_pending + t.Value); break;
                case ReportMetric.PendingMatured or ReportMetric.PendingReversed: _pending = checked(_pending - t.Value); break;
                case ReportMetric.Enrolled: _members = checked(_members + t.Value); break;
                case ReportMetric.MergedAway: _members = checked(_members - t.Value); break;
                case ReportMetric.CohortRedeemed: _maturedRedeemed = checked(_maturedRedeemed + t.Value); break;
                case ReportMetric.CohortExpired: _maturedExpired = checked(_maturedExpired + t.Value); break;
                case ReportMetric.StoreCreditIssued or ReportMetric.StoreCreditRefunded: _storeCredit = checked(_storeCredit + t.Value); break;
                case ReportMetric.StoreCreditSpent: _storeCredit = checked(_storeCredit - t.Value); break;
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
                RedemptionBp = observed ? Multipliers.One - breakageBp : 0,
                MaturedRedeemed = _maturedRedeemed,
                MaturedExpired = _maturedExpired,
                Members = _members,
                StoreCreditMinor = _storeCredit,
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
