using Loyalty.Host;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using SiloOptions = Loyalty.Host.SiloOptions;

namespace Loyalty.Tests.Cluster;

/// <summary>
/// Orleans' cache of grain addresses: off on one engine (its directory is in the same process,
/// so the cache only held every member's address twice), Orleans' size in a cluster, and a size
/// of one's own when set.
/// </summary>
public sealed class DirectoryCacheTests
{
    private const int OrleansDefault = 1_000_000;

    [Theory]
    [InlineData(MembershipKind.Localhost, null, 0)]
    [InlineData(MembershipKind.Postgres, null, OrleansDefault)]
    [InlineData(MembershipKind.Localhost, 5_000, 5_000)]
    [InlineData(MembershipKind.Postgres, 0, 0)]
    [InlineData(MembershipKind.Postgres, 3, 3)]
    [InlineData(MembershipKind.Postgres, SiloOptions.DirectoryCacheSizeMax, SiloOptions.DirectoryCacheSizeMax)]
    public void TheSize_FollowsTheMembership_UnlessSet(MembershipKind membership, int? set, int expected)
    {
        var silo = new SiloOptions { Membership = membership, DirectoryCacheSize = set };

        Assert.Equal(expected, silo.DirectoryCacheEntries(OrleansDefault));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(SiloOptions.DirectoryCacheSizeMax + 1)]
    public void ASizeOutOfRange_IsRefused_NamingTheSetting(int size)
    {
        var silo = new SiloOptions { DirectoryCacheSize = size };

        var refused = Assert.Throws<InvalidOperationException>(() => silo.DirectoryCacheEntries(OrleansDefault));
        Assert.Contains("Orleans:DirectoryCacheSize", refused.Message);
    }

    [Fact]
    public async Task OneEngine_RunsWithoutTheCache_AndServesMembers()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "dircache-off"));

        GrainDirectoryOptions options = engine.Services.GetRequiredService<IOptions<GrainDirectoryOptions>>().Value;
        Assert.Equal(GrainDirectoryOptions.CachingStrategyType.None, options.CachingStrategy);
        await AMemberEarnsAsync(engine);
    }

    [Fact]
    public async Task ASizeSet_IsTheCachesSize()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(
            TestDatabases.Create(Backend.Sqlite, "dircache-set"), null, "--Orleans:DirectoryCacheSize=5000");

        GrainDirectoryOptions options = engine.Services.GetRequiredService<IOptions<GrainDirectoryOptions>>().Value;
        Assert.Equal(GrainDirectoryOptions.CachingStrategyType.LRU, options.CachingStrategy);
        Assert.Equal(5_000, options.CacheSize);
        await AMemberEarnsAsync(engine);
    }

    [Fact]
    public async Task ASizeOutOfRange_StopsTheEngineFromStarting()
    {
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => InProcessEngine.StartAsync(
            TestDatabases.Create(Backend.Sqlite, "dircache-bad"), null, "--Orleans:DirectoryCacheSize=2"));

        Assert.Contains("Orleans:DirectoryCacheSize", refused.Message);
    }

    private static async Task AMemberEarnsAsync(InProcessEngine engine)
    {
        await engine.Programs.PutProgramAsync(Wire.Program("dircache"));
        for (int i = 0; i < 20; i++)
        {
            await engine.Members.EnrollAsync(new Loyalty.Api.V1.EnrollRequest { ProgramId = "dircache", MemberId = $"m{i}" });
            await engine.Purchases.AccrueAsync(Wire.Purchase("dircache", $"m{i}", $"t{i}", 10_00));
        }

        for (int i = 0; i < 20; i++)
        {
            var member = await engine.Members.GetMemberAsync(new Loyalty.Api.V1.GetMemberRequest { ProgramId = "dircache", MemberId = $"m{i}" });
            Assert.Equal(10, member.Balance);
        }
    }
}
