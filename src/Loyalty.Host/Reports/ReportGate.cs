using Microsoft.Extensions.Options;

namespace Loyalty.Host.Reports;

/// <summary>Limits of programme reports (configuration section <c>Reports</c>).</summary>
public sealed class ReportOptions
{
    /// <summary>The configuration section.</summary>
    public const string SectionName = "Reports";

    /// <summary>
    /// Reports of one program this node computes at once; more are refused with
    /// RESOURCE_EXHAUSTED. A report reads the programme's totals from its first day (its opening
    /// position), a read that grows with the programme's history, so one retailer's keys asking
    /// for many at once must not take the database from the others.
    /// </summary>
    public int ConcurrentPerProgramMax { get; set; } = 2;

    /// <summary>A problem with the values, or null.</summary>
    public string? Problem() =>
        ConcurrentPerProgramMax is < 1 or > 1_000 ? "Reports:ConcurrentPerProgramMax must be 1..1000" : null;
}

/// <summary>The places for reports being computed on this node, per program (<see cref="ReportOptions.ConcurrentPerProgramMax"/>).</summary>
public sealed class ReportGate(IOptions<ReportOptions> options)
{
    private readonly KeyedPlaces _places = new(options.Value.ConcurrentPerProgramMax);

    /// <summary>The most reports of one program computed at once.</summary>
    public int Max => _places.MaxPerKey;

    /// <summary>A place for a report of <paramref name="programId"/>, given back when disposed; null when the program has as many as it may.</summary>
    public Place? TryEnter(string programId) => _places.TryTake(programId) ? new Place(_places, programId) : null;

    /// <summary>A report's place; disposing it gives the place back (once).</summary>
    public sealed class Place(KeyedPlaces places, string programId) : IDisposable
    {
        private int _left;

        /// <inheritdoc />
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _left, 1) == 0)
            {
                places.GiveBack(programId);
            }
        }
    }
}
