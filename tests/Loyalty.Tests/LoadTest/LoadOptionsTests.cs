using Loyalty.LoadTest;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.LoadTest;

public sealed class LoadOptionsTests
{
    [Fact]
    public void Parse_NoBatch_SendsOnePurchasePerMessage()
    {
        Assert.Equal(1, LoadOptions.Parse([]).Batch);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1001")]
    public void Parse_BatchOutsideOneToTheEngineLimit_IsRefused(string batch)
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--batch", batch]));

        Assert.Contains("--batch must be 1..1000", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_BatchLargerThanInFlight_IsRefused()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--batch", "64", "--in-flight", "32"]));

        Assert.Contains("--in-flight", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_Rules_ArePlainUnlessFullIsAsked_AndFullAddsPendingExpiryAndTiers()
    {
        LoadOptions plain = LoadOptions.Parse([]);
        LoadOptions full = LoadOptions.Parse(["--rules", "full"]);
        V1.ProgramSettings plainSettings = PosMix.Program("p", plain.Rules).Settings;
        V1.ProgramSettings fullSettings = PosMix.Program("p", full.Rules).Settings;

        Assert.Equal(("plain", "full"), (plain.Rules, full.Rules));
        Assert.Equal((0, null, null), (plainSettings.PendingDays, plainSettings.Expiry, plainSettings.Tiers));
        Assert.Equal(14, fullSettings.PendingDays);
        Assert.Equal(V1.ExpiryMode.Lifespan, fullSettings.Expiry.Mode);
        Assert.Equal(["member", "silver", "gold"], fullSettings.Tiers.Tiers.Select(t => t.Name));
    }

    [Fact]
    public void Parse_UnknownRules_AreRefused()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--rules", "fancy"]));

        Assert.Contains("--rules is plain or full", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_SeveralTargets_AreSplitOnCommas()
    {
        Assert.Equal(["http://127.0.0.1:5000", "http://127.0.0.1:5002"], LoadOptions.Parse(["--target", "http://127.0.0.1:5000, http://127.0.0.1:5002"]).Targets);
    }

    [Theory]
    [InlineData(",")]
    [InlineData("http://127.0.0.1:5000,not a url")]
    public void Parse_TargetThatIsNotAnAbsoluteUrl_IsRefused(string target)
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--target", target]));

        Assert.Contains("--target takes one or more absolute URLs", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_EngineEnv_IsKeptForTheSpawnedEngine()
    {
        LoadOptions options = LoadOptions.Parse(["--spawn", "sqlite", "--engine-env", "DOTNET_GCGen0MaxBudget=1000000", "--engine-env", "A=b=c"]);

        Assert.Equal("1000000", options.EngineEnvironment["DOTNET_GCGen0MaxBudget"]);
        Assert.Equal("b=c", options.EngineEnvironment["A"]);
    }

    [Theory]
    [InlineData("--spawn", "sqlite", "--engine-env", "NOVALUE", "takes NAME=VALUE")]
    [InlineData("--spawn", "sqlite", "--engine-env", "=1", "takes NAME=VALUE")]
    [InlineData("--target", "http://127.0.0.1:5000", "--engine-env", "A=1", "for an engine started with --spawn")]
    [InlineData("--target", "http://127.0.0.1:5000", "--engine-arg", "--X=1", "for an engine started with --spawn")]
    public void Parse_EngineEnvOrArg_Malformed_OrWithoutSpawn_IsRefused(string a, string b, string c, string d, string said)
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse([a, b, c, d]));

        Assert.Contains(said, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_GrpcFloor_IsSpawned_AndNothingIsReadBack()
    {
        LoadOptions options = LoadOptions.Parse(["--spawn", "grpc-floor", "--engine-arg", "--Floor:Hops=2"]);

        Assert.Equal("grpc-floor", options.Spawn);
        Assert.False(options.Verify); // the floor keeps no balances
        Assert.Equal(["--Floor:Hops=2"], options.EngineArgs);
    }

    [Fact]
    public void Parse_SpawnOfAnUnknownKind_IsRefusedNamingTheKinds()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--spawn", "mysql"]));

        Assert.Equal("--spawn is sqlite, postgres, memory or grpc-floor", error.Message);
    }

    [Theory]
    [InlineData("--returns", "0.1")]
    [InlineData("--redemptions", "0.1")]
    [InlineData("--subscribers", "1")]
    public void Parse_GrpcFloor_WithWhatOnlyTheEngineAnswers_IsRefused(string option, string value)
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--spawn", "grpc-floor", option, value]));

        Assert.Contains("--spawn grpc-floor answers purchases only", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_GrpcFloor_WithAWebhook_IsRefused()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadOptions.Parse(["--spawn", "grpc-floor", "--webhook"]));

        Assert.Contains("--spawn grpc-floor answers purchases only", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_RateModeWithoutEvents_SendsWhatTheRateNeedsForTheWholeDuration()
    {
        // 200,000 would end a run at 12,700/s after 15.7 s, its warm-up still in the window.
        Assert.Equal(444_500, LoadOptions.Parse(["--mode", "rate", "--rate", "12700", "--duration", "35"]).Events);
        Assert.Equal(50_000, LoadOptions.Parse(["--mode", "rate", "--rate", "12700", "--duration", "35", "--events", "50000"]).Events);
        Assert.Equal(200_000, LoadOptions.Parse(["--mode", "max", "--duration", "35"]).Events);
    }
}
