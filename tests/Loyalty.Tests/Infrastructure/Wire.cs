using Google.Protobuf.WellKnownTypes;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Builders of wire messages.</summary>
public static class Wire
{
    public static V1.Purchase Purchase(string program, string member, string txn, long amountMinor, string currency = "USD") => new()
    {
        TransactionId = txn,
        ProgramId = program,
        MemberId = member,
        StoreId = "store-1",
        AmountMinor = amountMinor,
        Currency = currency,
        OccurredAt = Timestamp.FromDateTimeOffset(new DateTimeOffset(2026, 11, 1, 10, 0, 0, TimeSpan.Zero)),
        LineItems = { new V1.LineItem { Sku = "sku-1", Category = "food", Quantity = 1, AmountMinor = amountMinor } },
    };

    public static V1.PutProgramRequest Program(string program, long rate = 1) => new()
    {
        ProgramId = program,
        Settings = new V1.ProgramSettings
        {
            Name = "Shop " + program,
            Currency = "USD",
            CurrencyExponent = 2,
            EarnPointsPerUnit = rate,
            // The tests' purchases carry fixed dates; the default bound (365 days) would refuse them one day.
            MaxBackdateDays = 3_650,
        },
    };
}
