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
    private readonly int _max = options.Value.ConcurrentPerProgramMax;
    private readonly Dictionary<string, int> _running = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    /// <summary>A place for a report of <paramref name="programId"/>, given back when disposed; null when the program has as many as it may.</summary>
    public Place? TryEnter(string programId)
    {
        lock (_lock)
        {
            int running = _running.GetValueOrDefault(programId);
            if (running >= _max)
            {
                return null;
            }

            _running[programId] = running + 1;
            return new Place(this, programId);
        }
    }

    /// <summary>The most reports of one program computed at once.</summary>
    public int Max => _max;

    private void Leave(string programId)
    {
        lock (_lock)
        {
            int left = _running.GetValueOrDefault(programId) - 1;
            if (left > 0)
            {
                _running[programId] = left;
            }
            else
            {
                // Only programs with a report under way are held: the map does not grow with the programs ever reported on.
                _running.Remove(programId);
            }
        }
    }

    /// <summary>A report's place; disposing it gives the place back (once).</summary>
    public sealed class Place(ReportGate gate, string programId) : IDisposable
    {
        private int _left;

        /// <inheritdoc />
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _left, 1) == 0)
            {
                gate.Leave(programId);
            }
        }
    }
}
