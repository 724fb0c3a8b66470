using System.Buffers;
using Google.Protobuf;
using Loyalty.Host.Grpc;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>The walk that counts a request's embedded messages before it is parsed.</summary>
public sealed class MessageShapeTests
{
    [Fact]
    public void CountMessages_CountsEveryEmbeddedMessage_AtEveryDepth()
    {
        V1.PurchaseBatch batch = Batch(purchases: 3, linesEach: 4);

        long counted = MessageShape.CountMessages(new ReadOnlySequence<byte>(batch.ToByteArray()), V1.PurchaseBatch.Descriptor, long.MaxValue, null, 0, out long? cutAt, out bool readable);

        Assert.True(readable);
        // Each purchase, its timestamp, its line from Wire.Purchase and the four added.
        Assert.Equal(3 * (1 + 1 + 1 + 4), counted);
        Assert.Null(cutAt);
    }

    [Fact]
    public void CountMessages_OverTheBudget_StopsJustPastIt()
    {
        byte[] bytes = Batch(purchases: 50, linesEach: 10).ToByteArray();

        long counted = MessageShape.CountMessages(new ReadOnlySequence<byte>(bytes), V1.PurchaseBatch.Descriptor, 100, null, 0, out _, out _);

        Assert.Equal(101, counted);
    }

    [Fact]
    public void CountMessages_WithACutField_EndsAtTheOccurrencePastItsLimit_SoThatOnlyThatMuchIsParsed()
    {
        V1.PurchaseBatch batch = Batch(purchases: 30, linesEach: 1);
        byte[] bytes = batch.ToByteArray();
        var field = V1.PurchaseBatch.Descriptor.FindFieldByNumber(V1.PurchaseBatch.PurchasesFieldNumber);

        MessageShape.CountMessages(new ReadOnlySequence<byte>(bytes), V1.PurchaseBatch.Descriptor, long.MaxValue, field, 10, out long? cutAt, out _);
        V1.PurchaseBatch parsed = V1.PurchaseBatch.Parser.ParseFrom(new ReadOnlySequence<byte>(bytes).Slice(0, cutAt!.Value));

        Assert.Equal(11, parsed.Purchases.Count);
        Assert.Equal(batch.Purchases[10], parsed.Purchases[10]);
    }

    [Fact]
    public void CountMessages_OverBytesThatAreNotProtobuf_EndsWithoutThrowing_ForEveryPrefixAndMutation()
    {
        byte[] bytes = Batch(purchases: 4, linesEach: 3).ToByteArray();
        var random = new Random(7);
        for (int i = 0; i < 5_000; i++)
        {
            byte[] mutated = bytes[..random.Next(bytes.Length + 1)];
            for (int flips = random.Next(4); flips > 0 && mutated.Length > 0; flips--)
            {
                mutated[random.Next(mutated.Length)] = (byte)random.Next(256);
            }

            long counted = MessageShape.CountMessages(new ReadOnlySequence<byte>(mutated), V1.PurchaseBatch.Descriptor, 1_000, null, 0, out _, out _);

            Assert.InRange(counted, 0, 1_001);
        }
    }

    [Fact]
    public void MessagesMaxOf_LetsEveryRealisticRequestThrough_AndRefusesOneOfEmptyParts()
    {
        V1.PurchaseBatch full = Batch(purchases: 1_000, linesEach: 20);
        byte[] empty = [.. Enumerable.Repeat<byte[]>([0x0A, 0x00], 100_000).SelectMany(b => b)];

        long fullCount = MessageShape.CountMessages(new ReadOnlySequence<byte>(full.ToByteArray()), V1.PurchaseBatch.Descriptor, long.MaxValue, null, 0, out _, out _);
        long emptyCount = MessageShape.CountMessages(new ReadOnlySequence<byte>(empty), V1.PurchaseBatch.Descriptor, long.MaxValue, null, 0, out _, out _);

        Assert.True(fullCount <= MessageShape.MessagesMaxOf(full.CalculateSize()), $"{fullCount} messages in {full.CalculateSize()} bytes");
        Assert.True(emptyCount > MessageShape.MessagesMaxOf(empty.Length));
    }

    [Theory]
    [InlineData(new byte[] { 0x7B, 0x7C, 0x0A, 0x00 })]                               // an empty group (field 15), which the parser would keep
    [InlineData(new byte[] { 0x0A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 })]             // a length in six bytes, which the parser reads as 0
    [InlineData(new byte[] { 0x8A, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00 })]             // a tag in six bytes
    public void CountMessages_OverProtobufNoEncoderWrites_IsUnreadable(byte[] bytes)
    {
        MessageShape.CountMessages(new ReadOnlySequence<byte>(bytes), V1.PurchaseBatch.Descriptor, long.MaxValue, null, 0, out _, out bool readable);

        Assert.False(readable);
    }

    [Fact]
    public void CountMessages_CountsFieldsTheApiDoesNotKnow()
    {
        // Fields 16, 17 ... of PurchaseBatch, unknown to it: varints of value 0.
        byte[] bytes = [.. Enumerable.Range(16, 1_000).SelectMany(VarintField)];

        long counted = MessageShape.CountMessages(new ReadOnlySequence<byte>(bytes), V1.PurchaseBatch.Descriptor, long.MaxValue, null, 0, out _, out bool readable);

        Assert.True(readable);
        Assert.Equal(1_000, counted);
    }

    /// <summary>A varint field of value 0 numbered <paramref name="number"/>, as protobuf writes it.</summary>
    private static byte[] VarintField(int number)
    {
        using var stream = new MemoryStream();
        using (var output = new CodedOutputStream(stream, leaveOpen: true))
        {
            output.WriteTag(number, WireFormat.WireType.Varint);
            output.WriteInt32(0);
        }

        return stream.ToArray();
    }

    /// <summary>Purchases of the smallest realistic shape: short ids, lines with a short SKU and an amount.</summary>
    private static V1.PurchaseBatch Batch(int purchases, int linesEach)
    {
        var batch = new V1.PurchaseBatch();
        for (int p = 0; p < purchases; p++)
        {
            V1.Purchase purchase = Wire.Purchase("p", $"m{p % 10}", $"t{p}", 1_00);
            purchase.LineItems.Add(Enumerable.Range(0, linesEach).Select(l => new V1.LineItem { Sku = $"s{l}", AmountMinor = 1 }));
            batch.Purchases.Add(purchase);
        }

        return batch;
    }
}
