using System.Buffers;
using Google.Protobuf.Reflection;

namespace Loyalty.Host.Grpc;

/// <summary>
/// What a request message would become, read from its bytes before it is parsed. A message's
/// byte limit does not bound the objects it becomes: an embedded message costs two bytes on the
/// wire (its tag and a length of 0) and about a hundred in memory, so 4 MiB of empty purchases
/// parse into two million objects, a few hundred megabytes, before any count can be checked.
/// The walk counts the embedded messages (by the request's descriptor) and allocates nothing.
/// </summary>
public static class MessageShape
{
    /// <summary>
    /// Wire bytes a message needs on average for the objects it becomes to be accepted (see
    /// <see cref="MessagesMaxOf"/>): an embedded message with anything in it takes at least four
    /// (its tag and length, and one field's tag and value); an empty one takes two.
    /// </summary>
    public const int BytesPerMessageMin = 4;

    /// <summary>Embedded messages any request may hold whatever its size.</summary>
    private const int MessagesFree = 64;

    /// <summary>Nesting followed at most; deeper messages are left to the parser, which refuses past its own limit of 100.</summary>
    private const int DepthMax = 100;

    /// <summary>
    /// The most embedded messages a request of <paramref name="payloadBytes"/> may hold: one per
    /// <see cref="BytesPerMessageMin"/> bytes, so that only a request made mostly of empty parts
    /// is refused, and what any request becomes stays within a small multiple of its bytes (a
    /// line item with one field, the smallest that means anything, takes four).
    /// </summary>
    public static long MessagesMaxOf(long payloadBytes) => MessagesFree + payloadBytes / BytesPerMessageMin;

    /// <summary>
    /// Counts the embedded messages of <paramref name="payload"/>, a <paramref name="descriptor"/>
    /// message, up to <paramref name="messagesMax"/> + 1. When <paramref name="cutField"/> (a
    /// repeated message field of the top level) occurs more than <paramref name="cutAfter"/>
    /// times, stops there and gives in <paramref name="cutAt"/> where the occurrence after
    /// <paramref name="cutAfter"/> ends, so that the caller can parse only that much (enough to
    /// see the message is over its limit). A field this API does not know counts as a message
    /// (the parser discards it, but a bomb of them costs a walk). <paramref name="readable"/> is
    /// false for bytes the walk cannot follow: not protobuf, or protobuf no encoder of this API's
    /// messages writes (groups, tags and lengths in more bytes than they need), which the parser
    /// would read past what was counted; the caller refuses them.
    /// </summary>
    public static long CountMessages(ReadOnlySequence<byte> payload, MessageDescriptor descriptor, long messagesMax,
        FieldDescriptor? cutField, int cutAfter, out long? cutAt, out bool readable)
    {
        var reader = new SequenceReader<byte>(payload);
        var walk = new Walk(messagesMax, cutField, cutAfter);
        readable = walk.Message(ref reader, payload.Length, descriptor, depth: 0);
        cutAt = walk.CutAt;
        return walk.Messages;
    }

    /// <summary>The walk's counts; a value on the caller's stack.</summary>
    private struct Walk(long messagesMax, FieldDescriptor? cutField, int cutAfter)
    {
        private int _cutSeen;

        public long Messages { get; private set; }

        public long? CutAt { get; private set; }

        private readonly bool Stopped => Messages > messagesMax || CutAt is not null;

        /// <summary>Walks the fields of one message that ends at byte <paramref name="end"/>; false when the bytes are not valid protobuf.</summary>
        public bool Message(ref SequenceReader<byte> reader, long end, MessageDescriptor descriptor, int depth)
        {
            while (reader.Consumed < end && !Stopped)
            {
                if (!TryReadVarint(ref reader, out ulong tag, bytesMax: 5) || tag >> 3 is 0 or > int.MaxValue)
                {
                    return false;
                }

                if (!Field(ref reader, end, descriptor, (int)(tag >> 3), (int)(tag & 7), depth))
                {
                    return false;
                }
            }

            return reader.Consumed <= end;
        }

        private bool Field(ref SequenceReader<byte> reader, long end, MessageDescriptor descriptor, int number, int wireType, int depth)
        {
            FieldDescriptor? field = descriptor.FindFieldByNumber(number);
            if (field is null)
            {
                Messages++;
            }

            switch (wireType)
            {
                case 0:
                    return TryReadVarint(ref reader, out _, bytesMax: 10);
                case 1:
                    return TryAdvance(ref reader, 8, end);
                case 5:
                    return TryAdvance(ref reader, 4, end);
                case 2:
                    break;
                default:
                    // Groups (wire types 3 and 4) are not used by this API; the parser judges them.
                    return false;
            }

            if (!TryReadVarint(ref reader, out ulong length, bytesMax: 5) || reader.Consumed > end || length > (ulong)(end - reader.Consumed))
            {
                return false;
            }

            long fieldEnd = reader.Consumed + (long)length;
            if (field is not { FieldType: FieldType.Message } || depth >= DepthMax)
            {
                return TryAdvance(ref reader, (long)length, end);
            }

            Messages++;
            if (!Message(ref reader, fieldEnd, field.MessageType, depth + 1))
            {
                return false;
            }

            if (depth == 0 && field == cutField && ++_cutSeen > cutAfter)
            {
                CutAt = fieldEnd;
            }

            return !Stopped ? TryAdvance(ref reader, fieldEnd - reader.Consumed, end) : true;
        }

        private static bool TryAdvance(ref SequenceReader<byte> reader, long count, long end)
        {
            if (count < 0 || count > end - reader.Consumed || count > reader.Remaining)
            {
                return false;
            }

            reader.Advance(count);
            return true;
        }

        /// <summary>A varint of at most <paramref name="bytesMax"/> bytes: 5 for a tag or a length (32 bits), 10 for a value.</summary>
        private static bool TryReadVarint(ref SequenceReader<byte> reader, out ulong value, int bytesMax)
        {
            value = 0;
            for (int shift = 0; shift < 7 * bytesMax; shift += 7)
            {
                if (!reader.TryRead(out byte b))
                {
                    return false;
                }

                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                {
                    return true;
                }
            }

            return false;
        }
    }
}
