using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Storage;

/// <summary>
/// One details record per entry kind: each kind names its own record (or none), the details column
/// round-trips every record, and rows written when the details were one shared record read back
/// as the record of their kind.
/// </summary>
public sealed class EntryDetailsTests
{
    [Fact]
    public void EveryKind_NamesItsOwnRecordOrNone_NoRecordServesTwoKinds()
    {
        var seen = new Dictionary<Type, LedgerEntryKind>();
        foreach (LedgerEntryKind kind in Enum.GetValues<LedgerEntryKind>())
        {
            if (EntryDetails.For(kind) is not { } type)
            {
                continue;
            }

            Assert.True(type.IsSealed, $"{kind}'s record {type.Name} is not sealed");
            Assert.True(seen.TryAdd(type, kind), $"{type.Name} serves both {seen.GetValueOrDefault(type)} and {kind}");
        }

        Assert.Equal(
            [LedgerEntryKind.Referred, LedgerEntryKind.Erase, LedgerEntryKind.CauseChosen, LedgerEntryKind.ReferralConfirmed, LedgerEntryKind.ReferralWithdrawn, LedgerEntryKind.MergeStarted],
            Enum.GetValues<LedgerEntryKind>().Where(k => EntryDetails.For(k) is null));
    }

    [Fact]
    public void For_AnUndefinedKind_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => EntryDetails.For((LedgerEntryKind)999));
        Assert.Throws<ArgumentOutOfRangeException>(() => EntryDetails.For(0));
    }

    [Fact]
    public void DetailsColumn_EveryKindsRecord_RoundTripsAsThatRecord()
    {
        foreach (LedgerEntryKind kind in Enum.GetValues<LedgerEntryKind>())
        {
            if (EntryDetails.For(kind) is not { } type)
            {
                Assert.Null(DetailsJson.Read(kind, "{}"));
                continue;
            }

            var details = (EntryDetails)Activator.CreateInstance(type)!;
            string json = DetailsJson.Write(details)!;
            EntryDetails read = DetailsJson.Read(kind, json)!;

            Assert.IsType(type, read);
            Assert.Equal(json, DetailsJson.Write(read));
        }
    }

    [Fact]
    public void DetailsColumn_ARowWrittenAsTheSharedRecord_ReadsAsItsKindsRecord_IgnoringOtherKindsFields()
    {
        // As the engine wrote an earn before each kind had its own record: every name is the same.
        const string union = """{"components":[{"kind":"Base","code":"base","points":10}],"tier_after":"gold","earn_day":740000,"expires_at":"2027-06-01T00:00:00+00:00","held_points":7,"flags":["vip"],"wallet_minor":-500}""";

        var earn = Assert.IsType<EarnDetails>(DetailsJson.Read(LedgerEntryKind.Earn, union));
        var adjust = Assert.IsType<AdjustDetails>(DetailsJson.Read(LedgerEntryKind.Adjust, """{"expires_at":"2027-06-01T00:00:00+00:00"}"""));

        Assert.Equal((10L, "gold", "gold", 740_000, -500L), (earn.ComponentTotal(), earn.TierBefore, earn.TierAfter, earn.EarnDay, earn.WalletMinor));
        Assert.Empty(earn.CapsHit);
        Assert.Equal(new DateTimeOffset(2027, 6, 1, 0, 0, 0, TimeSpan.Zero), adjust.ExpiresAt);
        Assert.DoesNotContain("held_points", DetailsJson.Write(earn), StringComparison.Ordinal);
    }

    [Fact]
    public void DetailsAs_ARecordOfAnotherKind_Throws_NoDetailsIsNull()
    {
        LedgerEntry redeem = Entries.Earn("p", "m", 1, 10) with { Kind = LedgerEntryKind.Redeem, Details = new AdjustDetails() };

        InvalidOperationException thrown = Assert.Throws<InvalidOperationException>(() => redeem.DetailsAs<RedeemDetails>());
        Assert.Contains("details of type AdjustDetails, not RedeemDetails", thrown.Message, StringComparison.Ordinal);
        Assert.Null((redeem with { Details = null }).DetailsAs<RedeemDetails>());
    }
}
