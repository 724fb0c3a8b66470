using Google.Protobuf;
using Loyalty.Host.Grpc;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>
/// A purchase stream fills one ack message again for each purchase, and a batch stream one answer
/// for each batch: whatever came before, the message written must equal the one made anew for the
/// same results, field for field.
/// </summary>
public sealed class ReusedAckTests
{
    private static readonly DateTimeOffset At = new(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void AReusedAck_EqualsTheAckMadeAnew_AfterAnyOtherAnswer()
    {
        var reused = new ReusedAck();
        var random = new Random(20261204);
        for (int i = 0; i < 2_000; i++)
        {
            AccrualResult result = RandomResult(random, i);

            V1.PurchaseAck filled = reused.Fill(result);

            V1.PurchaseAck fresh = WireMapping.ToAck(result);
            Assert.Equal(fresh, filled);
            Assert.Equal(fresh.ToByteString(), filled.ToByteString());
        }
    }

    [Fact]
    public void AReusedBatchAnswer_EqualsTheAnswerMadeAnew_AfterAnyOtherBatch()
    {
        var reused = new ReusedBatchAck();
        var random = new Random(20261205);
        int purchase = 0;
        for (int batch = 0; batch < 300; batch++)
        {
            // Numbered across the run, so that an id left from an earlier batch at the same position shows.
            PurchasesService.StreamAck[] acks = [.. Enumerable.Range(0, random.Next(40)).Select(_ => RandomStreamAck(random, purchase++))];

            V1.PurchaseBatchAck answer = Answer(reused, acks);

            V1.PurchaseBatchAck fresh = MadeAnew(acks);
            Assert.Equal(fresh, answer);
            Assert.Equal(fresh.ToByteString(), answer.ToByteString());
        }

        Assert.InRange(reused.PositionsHeld, 30, 39);
    }

    [Fact]
    public void AReusedBatchAnswer_KeepsNoMorePositionsThanItsLimit_AndAnswersTheRestAnew()
    {
        var reused = new ReusedBatchAck();
        var random = new Random(5);
        PurchasesService.StreamAck[] acks = [.. Enumerable.Range(0, Limits.IngestBatchPurchasesMax).Select(i => new PurchasesService.StreamAck(RandomResult(random, i), null))];

        V1.PurchaseBatchAck answer = Answer(reused, acks);

        Assert.Equal(ReusedBatchAck.PositionsMax, reused.PositionsHeld);
        Assert.Equal(MadeAnew(acks), answer);
    }

    [Fact]
    public void AnAnswerThatCannotBeMapped_InABatch_IsThatPurchasesRejection_AndTheNextBatchIsWhole()
    {
        var reused = new ReusedBatchAck();
        var random = new Random(11);
        AccrualResult broken = RandomResult(random, 1) with
        {
            Status = AccrualStatus.Accepted,
            Details = new EarnDetails { Components = [new(ComponentKind.Base, "base", 5), new(ComponentKind.Product, null!, 7)] },
        };
        PurchasesService.StreamAck[] first = [new(RandomResult(random, 0), null), new(broken, null), new(RandomResult(random, 2), null)];
        PurchasesService.StreamAck[] second = [.. Enumerable.Range(3, 3).Select(i => new PurchasesService.StreamAck(RandomResult(random, i) with
        {
            Status = AccrualStatus.Accepted,
            Details = new EarnDetails { Components = [new(ComponentKind.Base, "base", i)] },
        }, null))];

        V1.PurchaseAck refused = Answer(reused, first).Acks[1];
        Assert.Equal((V1.AckStatus.Rejected, "UNAVAILABLE", "t1"), (refused.Status, refused.ErrorCode, refused.TransactionId));
        V1.PurchaseBatchAck next = Answer(reused, second);

        Assert.Equal(MadeAnew(second), next);
    }

    [Fact]
    public void AnAnswerThatCannotBeMapped_IsThatPurchasesRejection_AndTheNextAckIsWhole()
    {
        var reused = new ReusedAck();
        // A component without a code: the message's setter throws half-way through the breakdown.
        AccrualResult broken = RandomResult(new Random(3), 0) with
        {
            Status = AccrualStatus.Accepted,
            Details = new EarnDetails { Components = [new(ComponentKind.Base, "base", 5), new(ComponentKind.Product, null!, 7)], CapsHit = ["daily"] },
        };
        AccrualResult good = RandomResult(new Random(4), 1) with { Status = AccrualStatus.Accepted, Details = new EarnDetails { Components = [new(ComponentKind.Base, "base", 9)] } };

        V1.PurchaseAck refused = PurchasesService.MessageOf(new PurchasesService.StreamAck(broken, null), reused, NullLogger.Instance);
        V1.PurchaseAck next = PurchasesService.MessageOf(new PurchasesService.StreamAck(good, null), reused, NullLogger.Instance);

        Assert.Equal((V1.AckStatus.Rejected, "UNAVAILABLE", "t0"), (refused.Status, refused.ErrorCode, refused.TransactionId));
        Assert.Contains("may have been recorded", refused.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(WireMapping.ToAck(good), next);
    }

    [Fact]
    public void Clear_ResetsEveryField_IncludingRepeatedAndNestedOnes()
    {
        V1.PurchaseAck ack = WireMapping.ToAck(RandomResult(new Random(7), 0) with
        {
            Details = new EarnDetails { Components = [new(ComponentKind.Base, "base", 5)], CapsHit = ["daily"], TierAfter = "gold", ExpiresAt = At },
            AvailableAt = At,
            RedeemedLots = [new LotUse("l1", 3, At)],
        });
        ack.RetryAfterMs = 5;

        WireMapping.Clear(ack);

        Assert.Equal(new V1.PurchaseAck(), ack);
        Assert.Equal(0, ack.CalculateSize());
    }

    /// <summary>A member's answer, or now and then a refusal made before any member.</summary>
    private static PurchasesService.StreamAck RandomStreamAck(Random random, int i) =>
        random.Next(8) == 0
            ? new PurchasesService.StreamAck(null, WireMapping.Rejected($"t{i}", Grpc.Core.StatusCode.PermissionDenied, $"refused {i}"))
            : new PurchasesService.StreamAck(RandomResult(random, i), null);

    private static V1.PurchaseBatchAck Answer(ReusedBatchAck reused, PurchasesService.StreamAck[] acks)
    {
        V1.PurchaseBatchAck answer = reused.Begin();
        foreach (PurchasesService.StreamAck ack in acks)
        {
            reused.Add(ack, NullLogger.Instance);
        }

        return answer;
    }

    private static V1.PurchaseBatchAck MadeAnew(PurchasesService.StreamAck[] acks)
    {
        var answer = new V1.PurchaseBatchAck();
        answer.Acks.AddRange(acks.Select(a => a.Refusal ?? WireMapping.ToAck(a.Result!)));
        return answer;
    }

    /// <summary>Results of each shape a stream answers: accepted earns and returns with or without parts, duplicates, refusals.</summary>
    private static AccrualResult RandomResult(Random random, int i)
    {
        int shape = random.Next(6);
        string txn = $"t{i}";
        if (shape == 0)
        {
            return AccrualResult.Reject(txn, LoyaltyError.FailedPrecondition, $"refused {i}");
        }

        EntryDetails? details = shape switch
        {
            1 => null,
            2 => new ReturnDetails
            {
                Components = Components(random),
                PendingReversed = random.Next(100),
                Shortfall = random.Next(3),
                Lots = random.Next(2) == 0 ? null : [new LotUse($"l{i}", random.Next(50), At.AddDays(random.Next(30)))],
                Restored = random.Next(2) == 0 ? null : [new LotUse($"r{i}", random.Next(50), null)],
            },
            3 => new EnrolDetails { Components = Components(random), TierAfter = "member" },
            _ => new EarnDetails
            {
                Components = Components(random),
                CapsHit = random.Next(3) == 0 ? ["daily", $"campaign:c{i}"] : [],
                CappedPoints = random.Next(10),
                TierBefore = random.Next(2) == 0 ? "member" : null,
                TierAfter = random.Next(2) == 0 ? "gold" : null,
                TierReviewAt = random.Next(2) == 0 ? At.AddDays(i) : null,
                DowngradedFrom = random.Next(4) == 0 ? "silver" : null,
                ExpiresAt = random.Next(2) == 0 ? At.AddMonths(12) : null,
                RewardId = random.Next(3) == 0 ? "coffee" : null,
                Quantity = random.Next(3),
                Cause = random.Next(3) == 0 ? "forests" : null,
                GivenMinor = random.Next(100),
                WalletMinor = random.Next(100),
            },
        };
        return new AccrualResult(txn, shape == 1 ? AccrualStatus.Duplicate : AccrualStatus.Accepted, new Points(random.Next(1_000)),
            new Points(random.Next(100_000)), i + 1, LoyaltyError.None, null, details,
            random.Next(2) == 0 ? At.AddDays(14) : null, random.Next(5), new Points(random.Next(2) * 30),
            random.Next(3) == 0 ? [new LotUse($"lot{i}", 30, At.AddMonths(6)), new LotUse($"lot{i}b", 1, null)] : null, new Points(random.Next(500)));
    }

    private static BreakdownComponent[] Components(Random random) =>
        [.. Enumerable.Range(0, random.Next(6)).Select(k => new BreakdownComponent((ComponentKind)(1 + random.Next(3)), $"c{k}", random.Next(1, 400)))];
}
