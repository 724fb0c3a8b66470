using System.Text.Json;
using Loyalty.Grains;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Member state as a snapshot stores it, and a comparable description of it.</summary>
public static class Snapshots
{
    private static readonly Serializer Serializer = new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>();

    /// <summary>The state after an Orleans serialization round trip, as a snapshot write and read do.</summary>
    public static MemberState RoundTrip(MemberState state) => Serializer.Deserialize<MemberState>(Serializer.SerializeToArray(state))!;

    /// <summary>Every field of the state as JSON, for equality checks.</summary>
    public static string Describe(MemberState state) => JsonSerializer.Serialize(state);
}
