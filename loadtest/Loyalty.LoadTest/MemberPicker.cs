namespace Loyalty.LoadTest;

/// <summary>Picks members uniformly, with Zipf-distributed popularity, or in turn.</summary>
internal sealed class MemberPicker
{
    private readonly Random _random;
    private readonly double[]? _cumulative;
    private readonly int _members;
    private readonly int _step;
    private int _next = -1;

    public MemberPicker(int members, double skew, int seed)
    {
        _random = new Random(seed);
        _members = members;
        if (skew > 0)
        {
            _cumulative = new double[members];
            double sum = 0;
            for (int i = 0; i < members; i++)
            {
                sum += 1.0 / Math.Pow(i + 1, skew);
                _cumulative[i] = sum;
            }

            for (int i = 0; i < members; i++)
            {
                _cumulative[i] /= sum;
            }
        }
    }

    /// <summary>
    /// Members <paramref name="first"/>, first + step, first + 2 x step and so on, wrapping around:
    /// streams started at 0..step-1 with the same step visit every member once before any twice.
    /// </summary>
    public static MemberPicker InTurn(int members, int first, int step) => new(members, 0, seed: 0, first % members, step);

    private MemberPicker(int members, double skew, int seed, int first, int step)
        : this(members, skew, seed)
    {
        _next = first;
        _step = step;
    }

    public int Next()
    {
        if (_next >= 0)
        {
            int member = _next;
            _next = (int)((_next + (long)_step) % _members);
            return member;
        }

        if (_cumulative is null)
        {
            return _random.Next(_members);
        }

        int index = Array.BinarySearch(_cumulative, _random.NextDouble());
        return Math.Min(index < 0 ? ~index : index, _members - 1);
    }
}
