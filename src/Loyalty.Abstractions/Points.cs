namespace Loyalty;

/// <summary>A whole number of loyalty points. Arithmetic is checked: overflow throws.</summary>
[GenerateSerializer, Immutable]
public readonly record struct Points([property: Id(0)] long Value) : IComparable<Points>
{
    /// <summary>No points.</summary>
    public static readonly Points Zero = new(0);

    /// <summary>Adds two amounts of points; throws <see cref="OverflowException"/> on overflow.</summary>
    public static Points operator +(Points a, Points b) => new(checked(a.Value + b.Value));

    /// <summary>Subtracts two amounts of points; throws <see cref="OverflowException"/> on overflow.</summary>
    public static Points operator -(Points a, Points b) => new(checked(a.Value - b.Value));

    /// <summary>Negates an amount of points; throws <see cref="OverflowException"/> for the minimum value.</summary>
    public static Points operator -(Points a) => new(checked(-a.Value));

    /// <inheritdoc />
    public int CompareTo(Points other) => Value.CompareTo(other.Value);

    /// <inheritdoc />
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture) + " pts";
}
