using Loyalty.Grains;

namespace Loyalty.Tests.Rules;

/// <summary>Giving back: which cause a purchase gives to and how much, what returns take back, and the policy's refusals.</summary>
public sealed class GivingRulesTests
{
    private static readonly GivingPolicy Policy = new(50, [new Cause("forests", "Forests"), new Cause("oceans", "Oceans")], DefaultCause: "oceans");

    [Theory]
    [InlineData("forests", 100_00, "forests", 50)]
    [InlineData(null, 100_00, "oceans", 50)]
    [InlineData("withdrawn-cause", 100_00, "oceans", 50)]
    [InlineData("forests", 199, null, 0)]
    [InlineData("forests", 12_345_67, "forests", 6_172)]
    public void APurchase_GivesItsShare_ToTheChosenCause_OrTheDefault(string? chosen, long amountMinor, string? cause, long given)
    {
        Assert.Equal((cause, given), GivingRules.OfPurchase(Policy, chosen, amountMinor));
    }

    [Fact]
    public void WithoutADefault_AMemberWhoChoseNothing_GivesNothing()
    {
        Assert.Equal(((string?)null, 0L), GivingRules.OfPurchase(Policy with { DefaultCause = null }, null, 100_00));
        Assert.Equal(((string?)null, 0L), GivingRules.OfPurchase(null, "forests", 100_00));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Returns_NeverTakeBackMoreThanWasGiven_AndReturningAllTakesAll(int seed)
    {
        var random = new Random(seed);
        for (int round = 0; round < 200; round++)
        {
            long amount = random.NextInt64(1, 10_000_000);
            long given = random.NextInt64(0, amount + 1);
            long returned = 0, taken = 0;
            while (returned < amount)
            {
                long now = Math.Min(amount - returned, random.NextInt64(1, (amount / 3) + 2));
                long back = Reversal.TakenBack(given, amount, returned, now);
                Assert.InRange(back, 0, given - taken);
                (returned, taken) = (returned + now, taken + back);
            }

            Assert.Equal(given, taken);
        }
    }

    [Theory]
    [InlineData(0, "share_bp must be 1..10000")]
    [InlineData(10_001, "share_bp must be 1..10000")]
    public void APolicy_WithAShareOutOfRange_IsRefused(int shareBp, string message)
    {
        Assert.Contains(message, (Policy with { ShareBp = shareBp }).Check(), StringComparison.Ordinal);
    }

    [Fact]
    public void APolicy_WithoutCauses_RepeatedCauses_OrAnUnlistedDefault_IsRefused()
    {
        Assert.Contains("1..50 causes", (Policy with { Causes = [] }).Check(), StringComparison.Ordinal);
        Assert.Contains("repeats cause forests", (Policy with { Causes = [new Cause("forests", "A"), new Cause("forests", "B")], DefaultCause = null }).Check(), StringComparison.Ordinal);
        Assert.Contains("default_cause 'rivers'", (Policy with { DefaultCause = "rivers" }).Check(), StringComparison.Ordinal);
        Assert.Contains("causes[0].id", (Policy with { Causes = [new Cause("no spaces", "A")], DefaultCause = null }).Check(), StringComparison.Ordinal);
        Assert.Null(Policy.Check());
    }
}
