using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// The programmes of the source material, each loaded from its file in <c>scenarios/</c> through
/// the API and played as a short story that checks what the source says the programme does, on
/// both databases.
/// </summary>
public sealed class ScenarioTests
{
    /// <summary>1 December 2026, 10:00 in Los Angeles.</summary>
    private static readonly DateTimeOffset Start = new(2026, 12, 1, 18, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Sephora_OnePointPerDollar_SpendTiersEarnFaster_AndABirthdayGift(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "sephora-beauty-insider.json");
        await story.EnrolAsync("ana");

        V1.PurchaseAck first = await story.BuyAsync("ana", "s1", 400_00);
        V1.PurchaseAck second = await story.BuyAsync("ana", "s2", 100_00);
        V1.Member ana = await story.MemberAsync("ana");
        await story.Engine.Members.SetProfileAsync(new V1.SetProfileRequest { ProgramId = story.Program, MemberId = "ana", Fields = { ["birthday"] = "1994-12-09" } });
        await story.WaitForEntryAsync("ana", V1.LedgerEntryKind.Birthday);
        V1.RedemptionAck gift = await story.Redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = story.Program, MemberId = "ana", TransactionId = "gift", RewardId = "birthday-gift" });

        // $400 crosses VIB's $350 and still earns at the Insider rate; from then on $1 earns 1.25 points.
        Assert.Equal((400, "insider", "vib"), (first.PointsEarned, first.Breakdown.TierBefore, first.Breakdown.TierAfter));
        Assert.Equal(125, second.PointsEarned);
        Assert.Equal(("vib", "rouge", 100_000 - 50_000L), (ana.Tier, ana.TierProgress.NextTier, ana.TierProgress.ToNextTier));
        Assert.Equal((0L, 525L), (gift.Points, gift.Balance));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Starbucks_TwoStarsPerDollar_RewardsAt25To400Stars_ThatExpireAfterSixMonths(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "starbucks-rewards.json");
        await story.EnrolAsync("sam");

        V1.PurchaseAck latte = await story.BuyAsync("sam", "sb1", 13_00);
        V1.ListRewardsResponse menu = await story.Redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = story.Program, MemberId = "sam" });
        V1.RedemptionAck shot = await story.Redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = story.Program, MemberId = "sam", TransactionId = "shot", RewardId = "extra-shot" });
        V1.Member sam = await story.MemberAsync("sam");

        Assert.Equal(26, latte.PointsEarned);
        Assert.Equal(new[] { 25L, 100, 200, 300, 400 }, menu.Rewards.Select(r => r.Reward.PointsPrice));
        Assert.Equal(new[] { "extra-shot" }, menu.Rewards.Where(r => r.Redeemable).Select(r => r.Reward.Id));
        Assert.Equal(74, menu.Rewards.Single(r => r.Reward.Id == "brewed-coffee").PointsShort);
        Assert.Equal(1, shot.Balance);
        Assert.Equal(new DateTimeOffset(2027, 7, 1, 7, 0, 0, TimeSpan.Zero), Assert.Single(sam.Expiring).ExpiresAt.ToDateTimeOffset());
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Nordstrom_CardHoldersEarnThreePoints_TiersGrantPersonalDoublePointsDays_AndBonusEvents(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "nordstrom-nordy-club.json");
        await story.EnrolAsync("nia");
        await story.EnrolAsync("ned");
        await story.Engine.Members.SetMemberFlagsAsync(new V1.SetMemberFlagsRequest { ProgramId = story.Program, MemberId = "nia", AddFlags = { "nordstrom-card" } });

        V1.PurchaseAck withCard = await story.BuyAsync("nia", "n1", 600_00);
        V1.PurchaseAck withoutCard = await story.BuyAsync("ned", "n2", 100_00);
        V1.BookBonusDayResponse booked = await story.Engine.Members.BookBonusDayAsync(new V1.BookBonusDayRequest { ProgramId = story.Program, MemberId = "nia", BookingId = "nia-day", Day = "2026-12-05" });
        RpcException noDays = await Assert.ThrowsAsync<RpcException>(() => story.Engine.Members.BookBonusDayAsync(new V1.BookBonusDayRequest { ProgramId = story.Program, MemberId = "ned", BookingId = "ned-day", Day = "2026-12-05" }).ResponseAsync);
        story.Clock.SetUtcNow(new DateTimeOffset(2026, 12, 5, 20, 0, 0, TimeSpan.Zero));
        V1.PurchaseAck onTheDay = await story.BuyAsync("nia", "n3", 100_00, story.Clock.GetUtcNow());
        story.Clock.SetUtcNow(new DateTimeOffset(2026, 12, 11, 20, 0, 0, TimeSpan.Zero));
        V1.PurchaseAck inTheEvent = await story.BuyAsync("nia", "n4", 100_00, story.Clock.GetUtcNow());

        Assert.Equal((1_800, "influencer"), (withCard.PointsEarned, withCard.Breakdown.TierAfter));
        Assert.Equal((100, "member"), (withoutCard.PointsEarned, withoutCard.Breakdown.TierAfter));
        Assert.Equal((0, StatusCode.FailedPrecondition), (booked.DaysLeft, noDays.StatusCode));
        Assert.Equal(100 + 200 + 100, onTheDay.PointsEarned);
        Assert.Equal(100 + 200 + 200, inTheEvent.PointsEarned);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AmazonPrime_ATrialThenAPaidTerm_DoublesPoints_OpensPrimeDayAndMembersDeals_ThenLapsesUnpaid(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "amazon-prime.json");
        await story.EnrolAsync("pat");
        await story.EnrolAsync("pia");

        V1.MembershipResponse trial = await story.Engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = story.Program, MemberId = "pat", PlanId = "prime" });
        V1.PurchaseAck primeDay = await story.BuyAsync("pat", "a1", 50_00);
        V1.PurchaseAck nonMember = await story.BuyAsync("pia", "a2", 50_00);
        V1.MembershipResponse paid = await story.Engine.Members.ConfirmMembershipPaymentAsync(new V1.ConfirmMembershipPaymentRequest
        {
            ProgramId = story.Program, MemberId = "pat", PaymentId = "inv-1", PlanId = "prime", AmountMinor = 14_99, Currency = "USD",
        });
        V1.ListRewardsResponse deals = await story.Redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = story.Program, MemberId = "pat", RedeemableOnly = true });
        story.Clock.SetUtcNow(paid.Membership.TermEndsAt.ToDateTimeOffset().AddMinutes(1));
        await story.WaitForEntryAsync("pat", V1.LedgerEntryKind.MembershipLapsed);
        V1.PurchaseAck lapsed = await story.BuyAsync("pat", "a3", 50_00, story.Clock.GetUtcNow());

        Assert.Equal((V1.MembershipStatus.Trial, true), (trial.Membership.Status, trial.Membership.EarlyAccess));
        Assert.Equal(50 + 50 + 100, primeDay.PointsEarned);
        Assert.Equal(50, nonMember.PointsEarned);
        Assert.Equal(Start.AddDays(30).AddMonths(1), paid.Membership.TermEndsAt.ToDateTimeOffset());
        Assert.Equal(new[] { "prime-deal" }, deals.Rewards.Select(r => r.Reward.Id));
        Assert.Equal(50, lapsed.PointsEarned);
        Assert.Equal(V1.MembershipStatus.Lapsed, (await story.MemberAsync("pat")).Membership.Status);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Dropbox_BothSidesOfAReferralAreRewarded_OnTheFirstPaidPurchase(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "dropbox-referrals.json");
        await story.EnrolAsync("dee");
        string code = (await story.Engine.Members.GetReferralCodeAsync(new V1.GetMemberRequest { ProgramId = story.Program, MemberId = "dee" })).ReferralCode;
        await story.Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = story.Program, MemberId = "dan", ReferralCode = code });
        RpcException self = await Assert.ThrowsAsync<RpcException>(() =>
            story.Engine.Members.SetReferrerAsync(new V1.SetReferrerRequest { ProgramId = story.Program, MemberId = "dee", ReferralCode = code }).ResponseAsync);

        V1.Member before = await story.MemberAsync("dee");
        V1.PurchaseAck firstPayment = await story.BuyAsync("dan", "d1", 11_99);
        await story.WaitForEntryAsync("dee", V1.LedgerEntryKind.ReferralReward);
        V1.PurchaseAck secondPayment = await story.BuyAsync("dan", "d2", 11_99);

        Assert.Equal(0, before.Balance);
        Assert.Equal(StatusCode.InvalidArgument, self.StatusCode);
        Assert.Equal(500, firstPayment.PointsEarned);
        Assert.Equal(0, secondPayment.PointsEarned);
        V1.Member dee = await story.MemberAsync("dee");
        Assert.Equal(500, dee.Balance);
        Assert.Equal(new[] { "dan" }, dee.Referrals);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task MissionBased_OnePercentOfEachPurchaseGoesToTheMembersCause_AndPointsCanBeDonated(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "mission-giving.json");
        await story.EnrolAsync("mo");
        await story.EnrolAsync("mia");
        await story.Engine.Members.ChooseCauseAsync(new V1.ChooseCauseRequest { ProgramId = story.Program, MemberId = "mo", CauseId = "rivers" });

        V1.PurchaseAck rivers = await story.BuyAsync("mo", "m1", 250_00);
        V1.PurchaseAck byDefault = await story.BuyAsync("mia", "m2", 600_00);
        await story.Engine.Purchases.ReturnAsync(new V1.ReturnRequest
        {
            TransactionId = "m1-r", ProgramId = story.Program, MemberId = "mo", StoreId = "store-1", OriginalTransactionId = "m1",
            AmountMinor = 50_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(Start),
        });
        await story.Redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = story.Program, MemberId = "mia", TransactionId = "give", RewardId = "donate-5" });
        V1.ProgramReport report = await new V1.Reports.ReportsClient(story.Engine.Invoker).GetProgramReportAsync(new V1.ProgramReportRequest { ProgramId = story.Program, From = "2026-12-01", GroupBy = V1.ReportGrouping.Month });

        Assert.Equal(("rivers", 2_50L), (rivers.Breakdown.Cause, rivers.Breakdown.GivenMinor));
        Assert.Equal(("food-bank", 6_00L), (byDefault.Breakdown.Cause, byDefault.Breakdown.GivenMinor));
        Dictionary<string, V1.CauseDonations> causes = report.Total.Donations.ToDictionary(d => d.Cause);
        Assert.Equal(2_00, causes["rivers"].GivenMinor);
        Assert.Equal((6_00L, 5_00L, 1L), (causes["food-bank"].GivenMinor, causes["food-bank"].AmountMinor, causes["food-bank"].Donations));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Lululemon_AFreeCommunityMembershipOpensClasses_AndThePaidStudioPlanEarnsFasterWithEarlyAccess(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "lululemon-community.json");
        await story.EnrolAsync("lee");
        await story.EnrolAsync("liv");
        await story.BuyAsync("lee", "l0", 10_00);

        V1.MembershipResponse essential = await story.Engine.Members.ConfirmMembershipPaymentAsync(new V1.ConfirmMembershipPaymentRequest
        {
            ProgramId = story.Program, MemberId = "lee", PaymentId = "signup-lee", PlanId = "essential", AmountMinor = 0, Currency = "USD",
        });
        V1.RedemptionAck sweatClass = await story.Redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = story.Program, MemberId = "lee", TransactionId = "class-1", RewardId = "sweat-class" });
        RpcException notAMember = await Assert.ThrowsAsync<RpcException>(() =>
            story.Redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = story.Program, MemberId = "liv", TransactionId = "class-2", RewardId = "sweat-class" }).ResponseAsync);
        V1.MembershipResponse studio = await story.Engine.Members.StartMembershipTrialAsync(new V1.StartMembershipTrialRequest { ProgramId = story.Program, MemberId = "liv", PlanId = "studio" });
        V1.PurchaseAck studioEarn = await story.BuyAsync("liv", "l1", 100_00);

        Assert.Equal((V1.MembershipStatus.Active, false), (essential.Membership.Status, essential.Membership.EarlyAccess));
        Assert.Equal(Start.AddMonths(12), essential.Membership.TermEndsAt.ToDateTimeOffset());
        Assert.Equal(1, sweatClass.Points);
        Assert.Equal((StatusCode.FailedPrecondition, true), (notAMember.StatusCode, notAMember.Status.Detail.Contains("members of plans", StringComparison.Ordinal)));
        Assert.True(studio.Membership.EarlyAccess);
        Assert.Equal(150, studioEarn.PointsEarned);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task PatagoniaWornWear_InspectedTradeInsGiveStoreCredit_ThatPaysForGearAndComesBackWithAReturn(Backend backend)
    {
        await using Story story = await Story.StartAsync(backend, "patagonia-worn-wear.json");
        await story.EnrolAsync("pam");

        await story.Engine.Members.SubmitTradeInAsync(new V1.SubmitTradeInRequest { ProgramId = story.Program, MemberId = "pam", TradeInId = "wj-1", Category = "jackets", StoreId = "store-1" });
        await story.Engine.Members.SubmitTradeInAsync(new V1.SubmitTradeInRequest { ProgramId = story.Program, MemberId = "pam", TradeInId = "wp-1", Category = "packs", StoreId = "store-1" });
        V1.TradeInResponse jacket = await story.Engine.Members.InspectTradeInAsync(new V1.InspectTradeInRequest { ProgramId = story.Program, MemberId = "pam", TradeInId = "wj-1", Condition = V1.TradeInCondition.LikeNew });
        V1.TradeInResponse pack = await story.Engine.Members.InspectTradeInAsync(new V1.InspectTradeInRequest { ProgramId = story.Program, MemberId = "pam", TradeInId = "wp-1", Condition = V1.TradeInCondition.Rejected });
        V1.Purchase fleece = Wire.Purchase(story.Program, "pam", "buy-1", 80_00);
        fleece.OccurredAt = Timestamp.FromDateTimeOffset(Start);
        fleece.WalletMinor = 50_00;
        await story.Engine.Purchases.AccrueAsync(fleece);
        V1.Member spent = await story.MemberAsync("pam");
        await story.Engine.Purchases.ReturnAsync(new V1.ReturnRequest
        {
            TransactionId = "ret-1", ProgramId = story.Program, MemberId = "pam", StoreId = "store-1", OriginalTransactionId = "buy-1",
            AmountMinor = 80_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(Start),
        });

        Assert.Equal((50_00L, 0L), (jacket.CreditMinor, pack.CreditMinor));
        Assert.Equal(0, spent.WalletMinor);
        Assert.Equal(50_00, (await story.MemberAsync("pam")).WalletMinor);
    }

    /// <summary>An engine on a fake clock with one scenario loaded through the API as its program.</summary>
    private sealed class Story : IAsyncDisposable
    {
        private Story(InProcessEngine engine, FakeTimeProvider clock, string program)
        {
            (Engine, Clock, Program) = (engine, clock, program);
            Redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
        }

        public InProcessEngine Engine { get; }

        public FakeTimeProvider Clock { get; }

        public string Program { get; }

        public V1.Redemptions.RedemptionsClient Redemptions { get; }

        public static async Task<Story> StartAsync(Backend backend, string file)
        {
            var clock = new FakeTimeProvider(Start);
            string program = Path.GetFileNameWithoutExtension(file).Split('-')[0];
            InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "scenario-" + program), clock, "--Schedule:PollIntervalMs=50");
            V1.ProgramSettings settings = JsonParser.Default.Parse<V1.ProgramSettings>(await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root(), "scenarios", file)));
            await engine.Programs.PutProgramAsync(new V1.PutProgramRequest { ProgramId = program, Settings = settings, ExpectedVersion = 0 });
            return new Story(engine, clock, program);
        }

        public Task EnrolAsync(string member) => Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member }).ResponseAsync;

        public Task<V1.PurchaseAck> BuyAsync(string member, string txn, long amountMinor, DateTimeOffset? at = null)
        {
            V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
            purchase.OccurredAt = Timestamp.FromDateTimeOffset(at ?? Start);
            return Engine.Purchases.AccrueAsync(purchase).ResponseAsync;
        }

        public Task<V1.Member> MemberAsync(string member) =>
            Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = member }).ResponseAsync;

        public Task WaitForEntryAsync(string member, V1.LedgerEntryKind kind) => Calls.WaitForEntriesAsync(Engine, Program, member, (int)kind);

        public ValueTask DisposeAsync() => Engine.DisposeAsync();
    }
}
