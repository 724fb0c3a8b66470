namespace Loyalty.Tests.Infrastructure;

/// <summary>Builders of ledger entries and purchases for tests.</summary>
public static class Entries
{
    public static readonly DateTimeOffset Now = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    public static LedgerEntry Earn(string program, string member, long sequence, long points, string? txn = null) =>
        new(program, member, sequence, LedgerEntryKind.Earn, new Points(points), txn ?? $"{member}-t{sequence}", 42,
            "store-1", points * 100, "USD", null, null, Now, Now);

    public static Purchase Purchase(string program, string member, string txn, long amountMinor, DateTimeOffset? at = null) =>
        new(txn, program, member, "store-1", new Money(amountMinor, "USD"), at ?? DateTimeOffset.UtcNow.AddMinutes(-1), []);
}
