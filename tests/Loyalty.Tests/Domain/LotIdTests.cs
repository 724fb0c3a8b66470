using System.Runtime.CompilerServices;
using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;

namespace Loyalty.Tests.Domain;

/// <summary>Lot ids kept inside the lots, not as references to the purchases' strings.</summary>
public sealed class LotIdTests
{
    private static readonly IServiceProvider Services = new ServiceCollection().AddSerializer().BuildServiceProvider();
    private static readonly Serializer Serializer = Services.GetRequiredService<Serializer>();

    [Theory]
    [InlineData("t1")]
    [InlineData("#balance")]
    [InlineData("")]
    [InlineData("pos-0042:2026-12-03T10:15:00.123_abcdefghijklmnopqrstuvwxyz-0123")] // 64 characters, the API's limit
    [InlineData("a-transaction-id-longer-than-the-api-allows-which-older-ledgers-may-hold-still")]
    [InlineData("caf\u00e9-n\u00e3o-ascii")]
    public void From_KeepsTheText_ComparesByText_AndSurvivesSerializationAndCopy(string text)
    {
        LotId id = LotId.From(text);

        Assert.Equal(text, id.ToString());
        Assert.True(id.Is(text));
        Assert.False(id.Is(text + "x"));
        Assert.Equal(LotId.From(text), id);
        Assert.Equal(LotId.From(text).GetHashCode(), id.GetHashCode());
        Assert.NotEqual(LotId.From(text + "x"), id);
        Assert.Equal(id, Serializer.Deserialize<LotId>(Serializer.SerializeToArray(id)));
        var lot = new PointLot(text, new Points(5), null, warned: false);
        Assert.Equal(lot, Serializer.Deserialize<PointLot>(Serializer.SerializeToArray(lot)));
        Assert.Equal(lot, Services.GetRequiredService<DeepCopier<PointLot>>().Copy(lot)); // a snapshot write copies the state
        var pending = new PendingLot(text, DateTimeOffset.UnixEpoch, new Points(5), null);
        Assert.Equal(pending, Serializer.Deserialize<PendingLot>(Serializer.SerializeToArray(pending)));
        Assert.Equal(text, lot.Id);
        Assert.Equal(text, pending.TransactionId);
    }

    [Fact]
    public void Ids_OfTheSameLengthThatDiffer_AreNotEqual()
    {
        Assert.NotEqual(LotId.From("t-0001"), LotId.From("t-0002"));
        Assert.False(LotId.From("t-0001").Is("t-0002"));
        Assert.Equal(default, LotId.From(""));
        Assert.Equal(default, LotId.From(null)); // never written by the engine; replaying it cannot fail
        Assert.False(LotId.From("t-0001").Is(null));
        Assert.True(LotId.From(new string('a', LotId.InlineMax + 1)).Is(new string('a', LotId.InlineMax + 1)));
    }

    [Fact]
    public void AMemberState_WhoseLotWasOpenedByAPurchase_DoesNotKeepThePurchasesString()
    {
        var state = new MemberState();
        state.Apply(Entry(1, LedgerEntryKind.Enrol, 0, "signup"), 8);
        WeakReference purchaseId = ApplyPurchase(state);

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        // The lot still gives the purchase's id, from its own bytes; the string itself is gone.
        Assert.False(purchaseId.IsAlive);
        Assert.Equal("till-7:purchase-000123", Assert.Single(state.Lots.Spendable).Id);
        Assert.Equal(Snapshots.Describe(state), Snapshots.Describe(Snapshots.RoundTrip(state)));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference ApplyPurchase(MemberState state)
    {
        // A string made at run time, as a request's id is (a literal would be interned for ever).
        string txn = string.Concat("till-7:", "purchase-", 123.ToString("D6", System.Globalization.CultureInfo.InvariantCulture));
        LedgerEntry earn = Entry(2, LedgerEntryKind.Earn, 40, txn) with { Details = new EarnDetails() };
        state.Apply(earn, 8);
        return new WeakReference(earn.TransactionId);
    }

    private static LedgerEntry Entry(long sequence, LedgerEntryKind kind, long points, string txn)
    {
        var at = new DateTimeOffset(2026, 12, 3, 10, 0, 0, TimeSpan.Zero);
        return new("p", "m", sequence, kind, new Points(points), txn, 0, null, 0, "USD", null, "ref", at, at, 1, null, null);
    }
}
