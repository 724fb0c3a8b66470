using System.Text;
using Loyalty.Storage;

namespace Loyalty.Tests.Storage;

/// <summary>The earn's own JSON writer writes exactly what the details serializer writes (so it reads back as the serializer's does).</summary>
public sealed class EarnDetailsJsonTests
{
    private const int CasesPerSeed = 500;

    private static readonly string[] Texts =
        ["", "base", "gold", "daily", "campaign:spring", "sku-1", "Zoë \"quoted\" <b>&amp;</b>", "東京 🎉", "line\nbreak\ttab\\", "\u001f\u007f\u2028"];

    private static readonly DateTimeOffset[] Times =
        [new(2026, 12, 3, 10, 0, 0, TimeSpan.Zero), new DateTimeOffset(2027, 6, 1, 23, 59, 59, 999, TimeSpan.FromHours(-5)).AddTicks(1234), DateTimeOffset.MinValue, DateTimeOffset.MaxValue];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void AnyEarnsDetails_WrittenByHand_EqualTheSerializersBytes(int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < CasesPerSeed; i++)
        {
            EarnDetails details = RandomDetails(random);

            byte[] expected = DetailsJson.WriteUtf8BySerializer(details);
            byte[] written = DetailsJson.WriteUtf8(details)!;

            Assert.True(EarnDetailsJson.Handles(details));
            Assert.Equal(Encoding.UTF8.GetString(expected), Encoding.UTF8.GetString(written));
            Assert.Equal(expected, written);
        }
    }

    [Fact]
    public void AComponentOfAnUndefinedKind_IsLeftToTheSerializer()
    {
        var details = new EarnDetails { Components = [new BreakdownComponent((ComponentKind)42, "x", 1)] };

        Assert.False(EarnDetailsJson.Handles(details));
        Assert.Equal(DetailsJson.WriteUtf8BySerializer(details), DetailsJson.WriteUtf8(details));
    }

    [Fact]
    public void ALargeEarn_IsWrittenWhole_AndTheNextOneAfterItToo()
    {
        var lines = Enumerable.Range(0, Limits.LineItemsMax).Select(i => new SkuAmount($"sku-{i}-{new string('x', 60)}", i + 1, 10_000, "base", 1)).ToList();
        var large = new EarnDetails { Components = [new BreakdownComponent(ComponentKind.Base, "", 5)], Lines = lines };
        var small = new EarnDetails { Components = [new BreakdownComponent(ComponentKind.Base, "", 7)], TierAfter = "gold" };

        Assert.Equal(DetailsJson.WriteUtf8BySerializer(large), DetailsJson.WriteUtf8(large));
        Assert.Equal(DetailsJson.WriteUtf8BySerializer(small), DetailsJson.WriteUtf8(small));
    }

    private static EarnDetails RandomDetails(Random r) => new()
    {
        Components = List(r, 6, () => new BreakdownComponent(r.GetItems(Enum.GetValues<ComponentKind>(), 1)[0], Text(r)!, Number(r))),
        CapsHit = List(r, 3, () => Text(r)!),
        CappedPoints = Number(r),
        TierBefore = Text(r),
        TierAfter = r.Next(4) == 0 ? null : r.Next(2) == 0 ? "gold" : Text(r),
        TierReviewAt = Time(r),
        EarnDay = (int)Math.Clamp(Number(r), int.MinValue, int.MaxValue),
        EarnMonth = r.Next(2) == 0 ? 0 : r.Next(),
        Lines = r.Next(4) == 0 ? null : List(r, 5, () => new SkuAmount(Text(r)!, Number(r), r.Next(3) == 0 ? 0 : r.Next(), r.Next(3) == 0 ? null! : Text(r)!, r.Next(3) == 0 ? 0 : r.Next())),
        DowngradedFrom = Text(r),
        ExpiresAt = Time(r),
        RewardId = Text(r),
        Quantity = r.Next(3) == 0 ? 0 : r.Next(-5, 100),
        ReferrerReward = Number(r),
        Activity = r.Next(3) == 0 ? 0 : r.Next(),
        Cause = Text(r),
        GivenMinor = Number(r),
        WalletMinor = Number(r),
    };

    private static List<T> List<T>(Random r, int countMax, Func<T> make) =>
        Enumerable.Range(0, r.Next(countMax + 1)).Select(_ => make()).ToList();

    private static string? Text(Random r) => r.Next(3) == 0 ? null : Texts[r.Next(Texts.Length)];

    private static DateTimeOffset? Time(Random r) => r.Next(2) == 0 ? null : Times[r.Next(Times.Length)];

    private static long Number(Random r) => r.Next(6) switch
    {
        0 => 0,
        1 => long.MaxValue,
        2 => long.MinValue,
        3 => -r.NextInt64(1, 1_000_000),
        _ => r.NextInt64(1, 1_000_000_000),
    };
}
