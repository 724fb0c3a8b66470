namespace Loyalty.LoadTest;

/// <summary>Picks members uniformly or with Zipf-distributed popularity.</summary>
internal sealed class MemberPicker
{
    private readonly Random _random;
    private readonly double[]? _cumulative;
    private readonly int _members;

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

    public int Next()
    {
        if (_cumulative is null)
        {
            return _random.Next(_members);
        }

        int index = Array.BinarySearch(_cumulative, _random.NextDouble());
        return Math.Min(index < 0 ? ~index : index, _members - 1);
    }
}
