using Loyalty.Grains;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Serialization;
using Orleans.Storage;

namespace Loyalty.Tests.Storage;

/// <summary>The snapshot storage forgives an unreadable payload only for states the ledger rebuilds.</summary>
public sealed class SnapshotSerializerTests
{
    private static readonly byte[] Garbage = [0x00, 0xFF, 0x13, 0x37, 0x0B, 0xAD, 0xF0, 0x0D];

    private static SnapshotSerializer Create() =>
        new(new OrleansGrainStorageSerializer(new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>()),
            NullLogger<SnapshotSerializer>.Instance, TimeProvider.System);

    [Fact]
    public void AnUnreadableMemberSnapshot_ReadsAsNone_AndIsCounted()
    {
        SnapshotSerializer serializer = Create();

        MemberState? read = serializer.Deserialize<MemberState>(new BinaryData(Garbage));
        MemberState? truncated = serializer.Deserialize<MemberState>(new BinaryData(serializer.Serialize(new MemberState()).ToArray()[..3]));

        Assert.Null(read);
        Assert.Null(truncated);
        Assert.Equal(2, serializer.Unreadable);
    }

    [Fact]
    public void AnUnreadableSnapshot_IsCountedInTheStoragesMeter_ByItsType()
    {
        SnapshotSerializer serializer = Create();
        // Other tests read unreadable member snapshots at the same time: only this type counts here.
        using var counted = new TaggedCount("loyalty.snapshots.unreadable", "state", nameof(CountedState));

        Assert.Null(serializer.Deserialize<CountedState>(new BinaryData(Garbage)));
        Assert.Null(serializer.Deserialize<CountedState>(new BinaryData(Garbage)));
        Assert.Null(serializer.Deserialize<CountedState>(new BinaryData(Garbage)));

        Assert.Equal(3, counted.Value);
    }

    [Fact]
    public void AnUnreadableProgramOrStock_StillFailsItsRead()
    {
        SnapshotSerializer serializer = Create();

        Assert.ThrowsAny<Exception>(() => serializer.Deserialize<ProgramGrainState>(new BinaryData(Garbage)));
        Assert.ThrowsAny<Exception>(() => serializer.Deserialize<RewardStockState>(new BinaryData(Garbage)));
        Assert.Equal(0, serializer.Unreadable);
    }

    [Fact]
    public void AReadableMemberSnapshot_RoundTrips()
    {
        SnapshotSerializer serializer = Create();
        var state = new MemberState { Format = MemberState.CurrentFormat };

        MemberState read = serializer.Deserialize<MemberState>(serializer.Serialize(state))!;

        Assert.Equal(Snapshots.Describe(state), Snapshots.Describe(read));
        Assert.Equal(0, serializer.Unreadable);
    }
}

/// <summary>A state the ledger would rebuild, known only to this test (its count is its own); only garbage is read as it.</summary>
public sealed class CountedState : ILedgerRebuiltState;
