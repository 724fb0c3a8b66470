using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Storage;

/// <summary>The webhook store against real SQLite, real PostgreSQL and in memory: the same rules on each.</summary>
public sealed class WebhookStoreTests
{
    /// <summary>Has microseconds, so a store that rounds to milliseconds (or seconds) fails the round trip.</summary>
    private static readonly DateTimeOffset T0 = new DateTimeOffset(2026, 3, 14, 15, 9, 26, TimeSpan.Zero).AddTicks(5_358_970);

    private static readonly CancellationToken None = CancellationToken.None;

    public static TheoryData<string> Stores => ["sqlite", "postgres", "memory"];

    [Theory, MemberData(nameof(Stores))]
    public async Task Insert_ThenGetAndList_RoundTripEveryFieldToTheMicrosecond(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        WebhookRow full = new("p", "w-full", "https://example.test/hooks?a=1", "points.earned,tier.changed", "s3cr3t", 3,
            "old-secret", T0.AddHours(24).AddTicks(10), false, "turned off by the admin", T0.AddMinutes(-5).AddTicks(20),
            "cursor:42:7", T0.AddDays(-1), T0.AddTicks(30));
        WebhookRow bare = Row("w-bare");

        Assert.True(await store.TryInsertAsync(full, None));
        Assert.True(await store.TryInsertAsync(bare, None));
        Assert.True(await store.TryInsertAsync(Row("w-other") with { ProgramId = "q" }, None));

        Assert.Equal(full, await store.GetAsync("p", "w-full", None));
        Assert.Equal(bare, await store.GetAsync("p", "w-bare", None));
        Assert.Null(await store.GetAsync("p", "w-missing", None));
        Assert.Null(await store.GetAsync("q", "w-full", None));
        Assert.Equal([bare, full], await store.ListAsync("p", None));
        Assert.Empty(await store.ListAsync("nobody", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Insert_TakenId_IsRefusedAndChangesNothing(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);

        bool again = await store.TryInsertAsync(Row("w1") with { Url = "https://elsewhere.test/", Secret = "other" }, None);

        Assert.False(again);
        Assert.Equal(Row("w1"), await store.GetAsync("p", "w1", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task UpdateConfig_ChangesUrlTypesAndState_AndEnablingClearsTheReasonAndFailingSince(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1") with { FailingSince = T0 }, None);

        bool disabled = await store.UpdateConfigAsync("p", "w1", "https://b.test/", "tier.changed", false, "paused", T0.AddMinutes(1), None);
        WebhookRow? afterDisable = await store.GetAsync("p", "w1", None);
        bool enabled = await store.UpdateConfigAsync("p", "w1", "https://c.test/", "", true, null, T0.AddMinutes(2), None);
        WebhookRow? afterEnable = await store.GetAsync("p", "w1", None);
        bool missing = await store.UpdateConfigAsync("p", "w-missing", "https://c.test/", "", true, null, T0, None);

        Assert.True(disabled);
        Assert.Equal(Row("w1") with { Url = "https://b.test/", Types = "tier.changed", Enabled = false, DisabledReason = "paused", FailingSince = T0, UpdatedAt = T0.AddMinutes(1) }, afterDisable);
        Assert.True(enabled);
        Assert.Equal(Row("w1") with { Url = "https://c.test/", Types = "", UpdatedAt = T0.AddMinutes(2) }, afterEnable);
        Assert.False(missing);
        Assert.Null(await store.GetAsync("p", "w-missing", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task UpdateConfig_OfAnEnabledSubscription_LeavesFailingSinceToTheLeaseHolder(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1") with { FailingSince = T0 }, None);

        await store.UpdateConfigAsync("p", "w1", "https://b.test/", "", true, null, T0.AddMinutes(1), None);

        Assert.Equal(T0, (await store.GetAsync("p", "w1", None))!.FailingSince);
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task RotateSecret_BumpsTheKeyVersion_AndKeepsThePreviousSecretUntilItsDeadline(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);

        bool first = await store.RotateSecretAsync("p", "w1", "second", T0.AddHours(24), null, T0.AddMinutes(1), None);
        bool second = await store.RotateSecretAsync("p", "w1", "third", T0.AddHours(48), null, T0.AddMinutes(2), None);
        bool missing = await store.RotateSecretAsync("p", "w-missing", "x", T0, null, T0, None);

        Assert.True(first && second);
        Assert.Equal(
            Row("w1") with { Secret = "third", KeyVersion = 3, PreviousSecret = "second", PreviousSecretUntil = T0.AddHours(48), UpdatedAt = T0.AddMinutes(2) },
            await store.GetAsync("p", "w1", None));
        Assert.False(missing);
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task RotateSecret_FromAnExpectedVersion_AppliesOnlyAtThatVersion(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);

        bool fromOne = await store.RotateSecretAsync("p", "w1", "second", T0.AddHours(24), 1, T0.AddMinutes(1), None);
        bool fromOneAgain = await store.RotateSecretAsync("p", "w1", "third", T0.AddHours(48), 1, T0.AddMinutes(2), None);
        bool fromThree = await store.RotateSecretAsync("p", "w1", "third", T0.AddHours(48), 3, T0.AddMinutes(2), None);

        Assert.True(fromOne);
        Assert.False(fromOneAgain);
        Assert.False(fromThree);
        Assert.Equal(
            Row("w1") with { Secret = "second", KeyVersion = 2, PreviousSecret = Row("w1").Secret, PreviousSecretUntil = T0.AddHours(24), UpdatedAt = T0.AddMinutes(1) },
            await store.GetAsync("p", "w1", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Claim_LeasedSubscription_IsRefusedToAnotherOwnerUntilTheLeaseEnds_ButRenewedForItsOwner(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);

        IReadOnlyList<WebhookRow> byA = await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);
        IReadOnlyList<WebhookRow> byBWhileLeased = await store.ClaimAsync("b", T0.AddSeconds(10), T0.AddSeconds(40), 10, None);
        IReadOnlyList<WebhookRow> byAAgain = await store.ClaimAsync("a", T0.AddSeconds(20), T0.AddSeconds(60), 10, None);
        IReadOnlyList<WebhookRow> byBAtOldEnd = await store.ClaimAsync("b", T0.AddSeconds(31), T0.AddSeconds(90), 10, None);
        IReadOnlyList<WebhookRow> byBAfterEnd = await store.ClaimAsync("b", T0.AddSeconds(61), T0.AddSeconds(90), 10, None);
        IReadOnlyList<WebhookRow> byAAfterLoss = await store.ClaimAsync("a", T0.AddSeconds(62), T0.AddSeconds(120), 10, None);

        Assert.Equal([Row("w1")], byA);
        Assert.Empty(byBWhileLeased);
        Assert.Equal([Row("w1")], byAAgain);
        Assert.Empty(byBAtOldEnd);
        Assert.Equal([Row("w1")], byBAfterEnd);
        Assert.Empty(byAAfterLoss);
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Claim_TakesAtMostTheLimit_AndNeverADisabledSubscription(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.TryInsertAsync(Row("w2") with { Enabled = false, DisabledReason = "off" }, None);
        await store.TryInsertAsync(Row("w3"), None);
        await store.TryInsertAsync(Row("w4"), None);

        IReadOnlyList<WebhookRow> first = await store.ClaimAsync("a", T0, T0.AddSeconds(30), 2, None);
        IReadOnlyList<WebhookRow> rest = await store.ClaimAsync("b", T0, T0.AddSeconds(30), 10, None);
        IReadOnlyList<WebhookRow> later = await store.ClaimAsync("c", T0.AddHours(1), T0.AddHours(2), 10, None);

        Assert.Equal(2, first.Count);
        Assert.Single(rest);
        Assert.Equal(["w1", "w3", "w4"], first.Concat(rest).Select(w => w.WebhookId).Order(StringComparer.Ordinal));
        Assert.Equal(["w1", "w3", "w4"], later.Select(w => w.WebhookId).Order(StringComparer.Ordinal));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Claim_TwoOwnersAtOnce_NeverGetTheSameSubscription(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        for (int i = 0; i < 5; i++)
        {
            await store.TryInsertAsync(Row($"w{i}"), None);
        }

        for (int round = 0; round < 20; round++)
        {
            // Each round starts after the previous round's leases ended, so every subscription is free.
            DateTimeOffset now = T0.AddMinutes(round);
            IReadOnlyList<WebhookRow>[] claims = await Task.WhenAll(
                Task.Run(() => store.ClaimAsync("a", now, now.AddSeconds(30), 5, None)),
                Task.Run(() => store.ClaimAsync("b", now, now.AddSeconds(30), 5, None)));

            string[] a = [.. claims[0].Select(w => w.WebhookId)], b = [.. claims[1].Select(w => w.WebhookId)];
            Assert.Empty(a.Intersect(b));
            Assert.Equal(5, a.Length + b.Length);
        }
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task SaveProgress_ByTheOwner_WritesPositionAndFailingSince_AndExtendsTheLease(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);

        bool saved = await store.SaveProgressAsync("p", "w1", "a", "cursor:9", T0.AddSeconds(5), T0.AddSeconds(90), None);
        WebhookRow? failing = await store.GetAsync("p", "w1", None);
        IReadOnlyList<WebhookRow> byBAfterOldEnd = await store.ClaimAsync("b", T0.AddSeconds(60), T0.AddSeconds(120), 10, None);
        bool healthy = await store.SaveProgressAsync("p", "w1", "a", "cursor:10", null, T0.AddSeconds(90), None);

        Assert.True(saved);
        Assert.Equal(Row("w1") with { Position = "cursor:9", FailingSince = T0.AddSeconds(5) }, failing);
        Assert.Empty(byBAfterOldEnd);
        Assert.True(healthy);
        Assert.Equal(Row("w1") with { Position = "cursor:10" }, await store.GetAsync("p", "w1", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task SaveProgress_ByAnotherOwner_WritesNothingAndReturnsFalse(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);
        await store.ClaimAsync("b", T0.AddSeconds(31), T0.AddSeconds(60), 10, None);

        bool byLoser = await store.SaveProgressAsync("p", "w1", "a", "cursor:9", T0, T0.AddHours(1), None);
        bool missing = await store.SaveProgressAsync("p", "w-missing", "a", "cursor:9", T0, T0.AddHours(1), None);

        Assert.False(byLoser);
        Assert.False(missing);
        Assert.Equal(Row("w1"), await store.GetAsync("p", "w1", None));
        Assert.Empty(await store.ClaimAsync("a", T0.AddSeconds(40), T0.AddHours(1), 10, None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Disable_SeenUnderAnOlderConfiguration_ChangesNothing_SoALateFailureCannotUndoAReenable(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);
        Assert.True(await store.DisableAsync("p", "w1", "a", T0, "HTTP 500", T0.AddSeconds(1), None));
        // Re-enabled by an operator, and claimed again under the same owner (one node).
        await store.UpdateConfigAsync("p", "w1", "https://example.test/hooks", "points.earned", true, null, T0.AddSeconds(2), None);
        Assert.Single(await store.ClaimAsync("a", T0.AddSeconds(2), T0.AddSeconds(32), 10, None));

        bool late = await store.DisableAsync("p", "w1", "a", T0, "no answer within 1 s", T0.AddSeconds(3), None);
        bool current = await store.DisableAsync("p", "w1", "a", T0.AddSeconds(2), "HTTP 500 again", T0.AddSeconds(4), None);

        Assert.False(late);
        Assert.True(current);
        Assert.Equal("HTTP 500 again", (await store.GetAsync("p", "w1", None))!.DisabledReason);
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Disable_ByTheOwner_RecordsTheReasonAndStopsClaims_AndByAnotherOwnerChangesNothing(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1") with { FailingSince = T0 }, None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);

        bool byOther = await store.DisableAsync("p", "w1", "b", T0, "not mine", T0.AddSeconds(1), None);
        bool byOwner = await store.DisableAsync("p", "w1", "a", T0, "failing for 3 days: HTTP 500", T0.AddSeconds(2), None);
        bool saveAfter = await store.SaveProgressAsync("p", "w1", "a", "cursor:9", null, T0.AddSeconds(60), None);

        Assert.False(byOther);
        Assert.True(byOwner);
        Assert.False(saveAfter);
        Assert.Equal(Row("w1") with { Enabled = false, DisabledReason = "failing for 3 days: HTTP 500", FailingSince = T0, UpdatedAt = T0.AddSeconds(2) },
            await store.GetAsync("p", "w1", None));
        Assert.Empty(await store.ClaimAsync("a", T0.AddSeconds(3), T0.AddSeconds(60), 10, None));
        Assert.Empty(await store.ClaimAsync("b", T0.AddHours(1), T0.AddHours(2), 10, None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task UpdateConfig_Disabling_FailsTheOwnersNextSave_AndKeepsOtherOwnersOutUntilTheLeaseEnds(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);

        await store.UpdateConfigAsync("p", "w1", Row("w1").Url, "", false, "paused", T0.AddSeconds(1), None);
        bool saved = await store.SaveProgressAsync("p", "w1", "a", "cursor:9", null, T0.AddSeconds(60), None);
        await store.UpdateConfigAsync("p", "w1", Row("w1").Url, "", true, null, T0.AddSeconds(2), None);
        IReadOnlyList<WebhookRow> byBWithinOldLease = await store.ClaimAsync("b", T0.AddSeconds(3), T0.AddSeconds(60), 10, None);
        IReadOnlyList<WebhookRow> byBAfterIt = await store.ClaimAsync("b", T0.AddSeconds(31), T0.AddSeconds(60), 10, None);

        Assert.False(saved);
        Assert.Empty(byBWithinOldLease);
        Assert.Equal("pos-0", Assert.Single(byBAfterIt).Position);
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Release_ByTheOwner_LetsAnotherOwnerClaimAtOnce_AndByAnotherOwnerDoesNothing(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.ClaimAsync("a", T0, T0.AddSeconds(30), 10, None);

        await store.ReleaseAsync("p", "w1", "b", None);
        IReadOnlyList<WebhookRow> afterForeignRelease = await store.ClaimAsync("b", T0.AddSeconds(1), T0.AddSeconds(60), 10, None);
        await store.ReleaseAsync("p", "w1", "a", None);
        IReadOnlyList<WebhookRow> afterRelease = await store.ClaimAsync("b", T0.AddSeconds(2), T0.AddSeconds(60), 10, None);

        Assert.Empty(afterForeignRelease);
        Assert.Single(afterRelease);
        Assert.False(await store.SaveProgressAsync("p", "w1", "a", "cursor:9", null, T0.AddSeconds(60), None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Attempts_ReadNewestFirst_PagedByBeforeId_WithEveryField(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.TryInsertAsync(Row("w2"), None);
        WebhookAttemptRow failed = Attempt("w1", 1) with { StatusCode = 0, LatencyMs = 10_000, Error = "timed out", Attempt = 2, Manual = true };
        await store.AppendAttemptsAsync([Attempt("w1", 0), Attempt("w2", 0), failed], None);
        await store.AppendAttemptsAsync([Attempt("w1", 2), Attempt("w1", 3)], None);

        IReadOnlyList<WebhookAttemptRow> first = await store.ReadAttemptsAsync("p", "w1", long.MaxValue, 3, None);
        IReadOnlyList<WebhookAttemptRow> second = await store.ReadAttemptsAsync("p", "w1", first[^1].Id, 3, None);

        Assert.Equal([Attempt("w1", 3), Attempt("w1", 2), failed], first.Select(a => a with { Id = 0 }));
        Assert.Equal([Attempt("w1", 0)], second.Select(a => a with { Id = 0 }));
        long[] ids = [.. first.Concat(second).Select(a => a.Id)];
        Assert.Equal(ids.OrderDescending(), ids);
        Assert.Equal([Attempt("w2", 0)], (await store.ReadAttemptsAsync("p", "w2", long.MaxValue, 10, None)).Select(a => a with { Id = 0 }));
        Assert.Empty(await store.ReadAttemptsAsync("p", "w1", first[^1].Id, 0, None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Attempts_AreBoundedToTheNewestAttemptsKeptPerWebhook(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.TryInsertAsync(Row("w2"), None);
        const int appended = IWebhookStore.AttemptsKeptPerWebhook + 50;

        await store.AppendAttemptsAsync([.. Enumerable.Range(0, 600).Select(i => Attempt("w1", i)), Attempt("w2", 0)], None);
        await store.AppendAttemptsAsync([.. Enumerable.Range(600, appended - 600).Select(i => Attempt("w1", i))], None);

        IReadOnlyList<WebhookAttemptRow> kept = await store.ReadAttemptsAsync("p", "w1", long.MaxValue, 5_000, None);
        Assert.Equal(IWebhookStore.AttemptsKeptPerWebhook, kept.Count);
        Assert.Equal(Enumerable.Range(50, IWebhookStore.AttemptsKeptPerWebhook).Reverse().Select(i => $"e{i}"), kept.Select(a => a.EventId));
        Assert.Single(await store.ReadAttemptsAsync("p", "w2", long.MaxValue, 10, None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task Delete_RemovesTheSubscriptionAndItsAttempts_AndLaterAttemptsOfItAreNotAppended(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);
        await store.TryInsertAsync(Row("w1"), None);
        await store.TryInsertAsync(Row("w2"), None);
        await store.AppendAttemptsAsync([Attempt("w1", 0), Attempt("w1", 1), Attempt("w2", 0)], None);

        bool deleted = await store.DeleteAsync("p", "w1", None);
        bool again = await store.DeleteAsync("p", "w1", None);
        await store.AppendAttemptsAsync([Attempt("w1", 2)], None);
        await store.TryInsertAsync(Row("w1"), None);

        Assert.True(deleted);
        Assert.False(again);
        Assert.Empty(await store.ReadAttemptsAsync("p", "w1", long.MaxValue, 10, None));
        Assert.Single(await store.ReadAttemptsAsync("p", "w2", long.MaxValue, 10, None));
        Assert.Equal([Row("w1"), Row("w2")], await store.ListAsync("p", None));
    }

    [Theory, MemberData(nameof(Stores))]
    public async Task ClaimAndReadAttempts_NegativeLimit_IsRefused(string kind)
    {
        IWebhookStore store = await CreateStoreAsync(kind);

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.ClaimAsync("a", T0, T0.AddSeconds(30), -1, None));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.ReadAttemptsAsync("p", "w1", long.MaxValue, -1, None));
    }

    private static WebhookRow Row(string webhookId) => new(
        "p", webhookId, "https://example.test/hooks", "points.earned", "secret-" + webhookId, 1,
        null, null, true, null, null, "pos-0", T0.AddDays(-1), T0);

    private static WebhookAttemptRow Attempt(string webhookId, int n) => new(
        0, "p", webhookId, $"d{n}", $"e{n}", "points.earned", "m1", 1, T0.AddMilliseconds(n).AddTicks(10), 200, 12, null, false);

    /// <summary>A store on a fresh database, migrated by the ledger store as a silo does at start.</summary>
    private static async Task<IWebhookStore> CreateStoreAsync(string kind)
    {
        switch (kind)
        {
            case "sqlite":
            {
                StorageOptions options = TestDatabases.Create(Backend.Sqlite, "webhooks");
                using (var ledger = new SqliteLedgerStore(options.ConnectionString))
                {
                    await ledger.MigrateAsync(None);
                }

                return new SqliteWebhookStore(options.ConnectionString);
            }

            case "postgres":
            {
                StorageOptions options = TestDatabases.Create(Backend.Postgres, "webhooks");
                await using (var ledger = new PostgresLedgerStore(options.ConnectionString))
                {
                    await ledger.MigrateAsync(None);
                }

                return new PostgresWebhookStore(options.ConnectionString);
            }

            default:
                return new MemoryWebhookStore();
        }
    }
}
