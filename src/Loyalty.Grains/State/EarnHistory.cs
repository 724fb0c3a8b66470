using System.Collections.ObjectModel;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace Loyalty.Grains;

/// <summary>
/// What a member earned, bucketed the way the rules ask for it: qualifying points and spend per
/// UTC day (the tier window), points per program-local day and month (the earn caps), points per
/// campaign (campaign caps), and the purchase counts reports use. Every bucket list is bounded:
/// days older than two of the longest tier windows, and cap days and months past what a cap can
/// look at, are dropped as newer ones arrive, and so are the campaigns earned in least recently
/// beyond <see cref="CampaignsKept"/>. Changed only through <see cref="MemberState.Apply"/>.
/// </summary>
[GenerateSerializer]
public sealed class EarnHistory
{
    /// <summary>How many days of earn-cap history are kept (a month and then some).</summary>
    public const int CapDaysKept = 62;

    /// <summary>How many months of earn-cap history are kept.</summary>
    public const int CapMonthsKept = 14;

    /// <summary>
    /// How many campaigns' points a member keeps, for campaign caps: twice as many as a program
    /// may run at once. Beyond it, the campaign the member earned in least recently is forgotten
    /// (by ledger sequence, so replay forgets the same); a campaign can lose its count only when
    /// the member has earned in this many others since, at least half of them no longer running.
    /// </summary>
    public const int CampaignsKept = 2 * Limits.CampaignsMax;

    /// <summary>How many days apart the oldest and newest qualifying day kept may be.</summary>
    public const int QualifyingDaysSpanMax = Limits.TierWindowDaysMax + Limits.TierWindowDaysMax;

    [Id(0)] private List<QualifyingDay>? _qualification;
    [Id(7)] private CapBucket[]? _earnedByDay;
    [Id(8)] private CapBucket[]? _earnedByMonth;
    // Unused slots at the end of each cap array (0 in snapshots written before they existed).
    [Id(9)] private int _daySpare;
    [Id(10)] private int _monthSpare;
    [Id(11)] private Dictionary<string, CampaignTally>? _campaigns;
    [Id(4)] private long _purchaseCount;
    [Id(5)] private int _lastPurchaseDay;
    [Id(6)] private int _purchasesInPeriods;

    /// <summary>Qualifying points and spend per UTC day of recording, oldest first.</summary>
    public IReadOnlyList<QualifyingDay> Qualification => (IReadOnlyList<QualifyingDay>?)_qualification ?? [];

    /// <summary>
    /// Points earned per program-local day (DayNumber), oldest first, for the daily cap. An
    /// array of values with room at its end, not a dictionary: a purchase on a day already kept
    /// changes a number in place, and a new day takes a free slot; only when none is left is a
    /// larger array made (twice the days, up to the bound), so a member's purchases rarely leave
    /// a new object behind (see <see cref="MemberState.Prepare"/>).
    /// </summary>
    public IReadOnlyList<CapBucket> EarnedByDay => CapBucket.Used(_earnedByDay, _daySpare);

    /// <summary>Points earned per program-local month (year * 12 + month - 1), oldest first, for the monthly cap.</summary>
    public IReadOnlyList<CapBucket> EarnedByMonth => CapBucket.Used(_earnedByMonth, _monthSpare);

    /// <summary>Points earned on program-local day <paramref name="day"/>, as far as it is kept.</summary>
    public long EarnedOnDay(int day) => CapBucket.Find(_earnedByDay, _daySpare, day);

    /// <summary>Points earned in program-local month <paramref name="month"/>, as far as it is kept.</summary>
    public long EarnedInMonth(int month) => CapBucket.Find(_earnedByMonth, _monthSpare, month);

    /// <summary>Points earned per campaign, net of returns, for campaign caps, with the entry that last earned from each.</summary>
    public IReadOnlyDictionary<string, CampaignTally> Campaigns => (IReadOnlyDictionary<string, CampaignTally>?)_campaigns ?? ReadOnlyDictionary<string, CampaignTally>.Empty;

    /// <summary>Points earned from campaign <paramref name="campaignId"/>, net of returns, as far as it is kept.</summary>
    public long CampaignEarned(string campaignId) => _campaigns?.GetValueOrDefault(campaignId).Points ?? 0;

    /// <summary>Purchases accepted (earn entries), returned or not.</summary>
    public long PurchaseCount => _purchaseCount;

    /// <summary>The UTC day (day number) of the member's last purchase; 0 before the first.</summary>
    public int LastPurchaseDay => _lastPurchaseDay;

    /// <summary>Purchases, at most 2, in the day, week, month and year of <see cref="LastPurchaseDay"/> (<see cref="PurchaseActivity"/>).</summary>
    public int PurchasesInPeriods => _purchasesInPeriods;

    /// <summary>Room for the next qualifying day and cap day and month, made now (see <see cref="MemberState.Prepare"/>).</summary>
    public void Prepare()
    {
        List<QualifyingDay> days = _qualification ??= new(SpareDays);
        days.EnsureCapacity(days.Count + 1);
        CapBucket.MakeRoom(ref _earnedByDay, ref _daySpare, CapDaysKept);
        CapBucket.MakeRoom(ref _earnedByMonth, ref _monthSpare, CapMonthsKept);
    }

    private const int SpareDays = 1;

    /// <summary>Counts a purchase recorded on UTC day <paramref name="day"/>, before it is bucketed.</summary>
    public void CountPurchase(int day)
    {
        _purchasesInPeriods = PurchaseActivity.Advance(_lastPurchaseDay, _purchasesInPeriods, _purchaseCount, day);
        _lastPurchaseDay = day;
        _purchaseCount++;
    }

    /// <summary>Counts the purchases of a duplicate account merged into this member.</summary>
    public void CountMergedPurchases(long purchases) => _purchaseCount = checked(_purchaseCount + purchases);

    /// <summary>Counts an earn (entry <paramref name="sequence"/>)'s points in its cap day and month and in each of its campaigns.</summary>
    public void CountEarn(int earnDay, int earnMonth, long points, IReadOnlyList<BreakdownComponent> components, long sequence)
    {
        CapBucket.Add(ref _earnedByDay, ref _daySpare, earnDay, points, CapDaysKept, createMissing: true);
        CapBucket.Add(ref _earnedByMonth, ref _monthSpare, earnMonth, points, CapMonthsKept, createMissing: true);
        for (int i = 0; i < components.Count; i++)
        {
            if (components[i] is { Kind: ComponentKind.Campaign } c)
            {
                Dictionary<string, CampaignTally> campaigns = _campaigns ??= new(StringComparer.Ordinal);
                campaigns[c.Code] = new CampaignTally(checked(campaigns.GetValueOrDefault(c.Code).Points + c.Points), sequence);
            }
        }

        while (_campaigns is { Count: > CampaignsKept } kept)
        {
            kept.Remove(LeastRecentlyEarned(kept));
        }
    }

    /// <summary>
    /// The campaign earned from least recently; among those last earned by the same entry, the
    /// first by ordinal code, so that the choice never depends on the dictionary's order (which
    /// differs between a live member and one read from a snapshot).
    /// </summary>
    private static string LeastRecentlyEarned(Dictionary<string, CampaignTally> campaigns)
    {
        (string Code, long LastEarned)? least = null;
        foreach ((string code, CampaignTally tally) in campaigns)
        {
            if (least is not { } l || tally.LastEarned < l.LastEarned || (tally.LastEarned == l.LastEarned && string.CompareOrdinal(code, l.Code) < 0))
            {
                least = (code, tally.LastEarned);
            }
        }

        return least!.Value.Code;
    }

    /// <summary>
    /// Takes a return's <paramref name="reversed"/> points off the cap day and month of its
    /// purchase, and its components (the positive points reversed) off their campaigns, each only
    /// while it is still kept: a return never creates a period or a campaign.
    /// </summary>
    public void CountReturn(int earnDay, int earnMonth, long reversed, IReadOnlyList<BreakdownComponent> components)
    {
        CapBucket.Add(ref _earnedByDay, ref _daySpare, earnDay, -reversed, CapDaysKept, createMissing: false);
        CapBucket.Add(ref _earnedByMonth, ref _monthSpare, earnMonth, -reversed, CapMonthsKept, createMissing: false);
        for (int i = 0; i < components.Count; i++)
        {
            if (components[i] is { Kind: ComponentKind.Campaign } c && _campaigns is { } campaigns && campaigns.TryGetValue(c.Code, out CampaignTally tally))
            {
                campaigns[c.Code] = tally with { Points = checked(tally.Points - c.Points) };
            }
        }
    }

    /// <summary>
    /// Adds qualifying points and spend to UTC day <paramref name="day"/>; a return's negative
    /// amounts only reduce a day still kept (<paramref name="createMissing"/> false).
    /// </summary>
    public void AddQualifying(int day, long points, long spend, bool createMissing = true)
    {
        List<QualifyingDay> days = _qualification ??= [];
        // Days are kept in order and nearly always arrive as the newest: search from the end.
        int at = days.Count;
        while (at > 0 && days[at - 1].Day > day)
        {
            at--;
        }

        if (at > 0 && days[at - 1].Day == day)
        {
            ref QualifyingDay bucket = ref CollectionsMarshal.AsSpan(days)[at - 1];
            bucket = new QualifyingDay(day, checked(bucket.Points + points), checked(bucket.Spend + spend));
        }
        else if (createMissing)
        {
            days.Insert(at, new QualifyingDay(day, points, spend));
        }
        else
        {
            return;
        }

        int oldest = days[^1].Day - QualifyingDaysSpanMax;
        int expired = 0;
        while (expired < days.Count && days[expired].Day < oldest)
        {
            expired++;
        }

        days.RemoveRange(0, expired);
    }

    /// <summary>
    /// The qualifying days as a merge hands them on: never null (even with none), so that the
    /// survivor knows the duplicate's returns take off its qualification from then on.
    /// </summary>
    public IReadOnlyList<QualifyingDayUse> QualificationToHandOn() =>
        _qualification is { Count: > 0 } days ? [.. days.Select(q => new QualifyingDayUse(q.Day, q.Points, q.Spend))] : [];

    /// <summary>
    /// Adds a merged duplicate's qualifying days to this member's, day by day; days older than the
    /// span kept fall away as they do for this member's own.
    /// </summary>
    public void AdoptQualifying(IReadOnlyList<QualifyingDayUse> days)
    {
        for (int i = 0; i < days.Count; i++)
        {
            AddQualifying(days[i].Day, days[i].Points, days[i].Spend);
        }
    }

    /// <summary>The first and last UTC day (day numbers) of the tier window of <paramref name="windowDays"/> days ending at <paramref name="at"/>.</summary>
    public static (int First, int Last) WindowDays(DateTimeOffset at, int windowDays)
    {
        int last = MemberState.DayOf(at);
        return (last - windowDays + 1, last);
    }

    /// <summary>Qualifying points and spend recorded in the window of <paramref name="windowDays"/> days ending at <paramref name="at"/>.</summary>
    public (long Points, long Spend) QualifyingAt(DateTimeOffset at, int windowDays)
    {
        IReadOnlyList<QualifyingDay> days = Qualification;
        (int first, int last) = WindowDays(at, windowDays);
        long points = 0, spend = 0;
        // Days are in order: walk back from the newest and stop at the window's start.
        for (int i = days.Count - 1; i >= 0 && days[i].Day >= first; i--)
        {
            if (days[i].Day <= last)
            {
                points = checked(points + days[i].Points);
                spend = checked(spend + days[i].Spend);
            }
        }

        return (points, spend);
    }

    /// <summary>Throws unless every bucket list is within its bound and the qualifying days are in order.</summary>
    public void AssertInvariants(long sequence)
    {
        IReadOnlyList<QualifyingDay> days = Qualification;
        for (int i = 1; i < days.Count; i++)
        {
            if (days[i - 1].Day >= days[i].Day)
            {
                throw new InvalidOperationException($"After entry {sequence}: qualifying days are out of order.");
            }
        }

        if (days.Count > 0 && days[^1].Day - days[0].Day > QualifyingDaysSpanMax)
        {
            throw new InvalidOperationException($"After entry {sequence}: qualifying days span more than {QualifyingDaysSpanMax} days.");
        }

        int capDays = CapBucket.Count(_earnedByDay, _daySpare), capMonths = CapBucket.Count(_earnedByMonth, _monthSpare), campaigns = _campaigns?.Count ?? 0;
        if (capDays > CapDaysKept || capMonths > CapMonthsKept || campaigns > CampaignsKept)
        {
            throw new InvalidOperationException($"After entry {sequence}: {capDays} cap days, {capMonths} cap months or {campaigns} campaigns kept.");
        }
    }
}

/// <summary>Points a member earned from one campaign, net of returns since.</summary>
/// <param name="Points">The points, for the campaign's cap.</param>
/// <param name="LastEarned">The sequence of the member's entry that last earned from it: the least recent is forgotten first.</param>
[GenerateSerializer, Immutable]
public readonly record struct CampaignTally(
    [property: Id(0)] long Points,
    [property: Id(1)] long LastEarned);

/// <summary>Points earned in one cap period (a program-local day or month).</summary>
/// <param name="Key">The period: a day number or a month number.</param>
/// <param name="Points">Points earned in it, net of returns since.</param>
[GenerateSerializer, Immutable]
public readonly record struct CapBucket(
    [property: Id(0)] int Key,
    [property: Id(1)] long Points)
{
    /// <summary>How many periods <paramref name="buckets"/> holds when its last <paramref name="spare"/> slots are free.</summary>
    public static int Count(CapBucket[]? buckets, int spare) => buckets is null ? 0 : buckets.Length - spare;

    /// <summary>The periods held, oldest first, without the free slots.</summary>
    public static IReadOnlyList<CapBucket> Used(CapBucket[]? buckets, int spare) =>
        buckets is null ? Array.Empty<CapBucket>() : new ArraySegment<CapBucket>(buckets, 0, buckets.Length - spare);

    /// <summary>The points of period <paramref name="key"/> in <paramref name="buckets"/> (sorted by key, <paramref name="spare"/> free slots at the end), or 0.</summary>
    public static long Find(CapBucket[]? buckets, int spare, int key)
    {
        int at = buckets is null ? -1 : Array.BinarySearch(buckets, 0, buckets.Length - spare, new CapBucket(key, 0), ByKey.Instance);
        return at >= 0 ? buckets![at].Points : 0;
    }

    /// <summary>
    /// Adds <paramref name="points"/> to period <paramref name="key"/>, in place when it is kept;
    /// a new period (unless <paramref name="createMissing"/> is false) takes a free slot (a larger
    /// array is made only when none is left), and when that makes more than <paramref name="kept"/>
    /// periods, those <paramref name="kept"/> or more before the newest are dropped, freeing
    /// their slots. <paramref name="buckets"/> stays sorted by key, with <paramref name="spare"/>
    /// free slots at its end.
    /// </summary>
    public static void Add(ref CapBucket[]? buckets, ref int spare, int key, long points, int kept, bool createMissing)
    {
        int count = Count(buckets, spare);
        int at = buckets is null ? -1 : Array.BinarySearch(buckets, 0, count, new CapBucket(key, 0), ByKey.Instance);
        if (at >= 0)
        {
            buckets![at] = new CapBucket(key, checked(buckets[at].Points + points));
            return;
        }

        if (!createMissing)
        {
            return;
        }

        MakeRoom(ref buckets, ref spare, kept);
        at = ~at;
        Array.Copy(buckets, at, buckets, at + 1, count - at);
        buckets[at] = new CapBucket(key, points);
        count++;
        spare--;
        if (count <= kept)
        {
            return;
        }

        int oldestKept = buckets[count - 1].Key - kept;
        int dropped = 0;
        while (buckets[dropped].Key <= oldestKept)
        {
            dropped++;
        }

        Array.Copy(buckets, dropped, buckets, 0, count - dropped);
        Array.Clear(buckets, count - dropped, dropped);
        spare += dropped;
    }

    /// <summary>
    /// Makes sure <paramref name="buckets"/> has a free slot: when it has none, a new array twice
    /// as long (at least one slot, at most one more than <paramref name="kept"/>) takes over its periods.
    /// </summary>
    public static void MakeRoom([NotNull] ref CapBucket[]? buckets, ref int spare, int kept)
    {
        if (buckets is not null && spare > 0)
        {
            return;
        }

        int count = Count(buckets, spare);
        var grown = new CapBucket[Math.Min(kept + 1, Math.Max(1, count * 2))];
        if (buckets is not null)
        {
            Array.Copy(buckets, grown, count);
        }

        (buckets, spare) = (grown, grown.Length - count);
    }

    private sealed class ByKey : IComparer<CapBucket>
    {
        public static readonly ByKey Instance = new();

        public int Compare(CapBucket x, CapBucket y) => x.Key.CompareTo(y.Key);
    }
}

/// <summary>Qualifying points and spend recorded on one UTC day.</summary>
/// <param name="Day">The day (DateOnly.DayNumber).</param>
/// <param name="Points">Points earned that day, net of returns since.</param>
/// <param name="Spend">Money spent that day in minor units, net of returns since.</param>
[GenerateSerializer, Immutable]
public readonly record struct QualifyingDay(
    [property: Id(0)] int Day,
    [property: Id(1)] long Points,
    [property: Id(2)] long Spend);
