using Loyalty.Api;
using Loyalty.Host.Access;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// The keys tests call with. Every engine a test starts is given <see cref="Operator"/> as its
/// configured operator key (<c>Auth:BootstrapOperatorKey</c>), so the tests authenticate like any client.
/// </summary>
public static class TestKeys
{
    /// <summary>An operator key made for this test run.</summary>
    public static readonly string Operator = KeyTokens.New().Token;

}
