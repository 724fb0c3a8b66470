using Grpc.Core;
using Loyalty.Host.Grpc;
using Loyalty.Storage;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Events;

/// <summary>The event stream over gRPC. The interceptor has already checked the key, its scope and program.</summary>
public sealed class EventsService(EventFeed feed, ILedgerStore store, IGrainFactory grains, OpenStreams streams) : V1.Events.EventsBase
{
    /// <summary>The message of a stream ended by a stopping node.</summary>
    public const string StoppingMessage = "the node is stopping: subscribe on another node with the cursor of the last event you handled";

    /// <inheritdoc />
    public override async Task Subscribe(V1.SubscribeRequest request, IServerStreamWriter<V1.Event> responseStream, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id"));
        HashSet<string>? types = ParseTypes(request.EventTypes);
        if (await grains.GetGrain<IProgramGrain>(request.ProgramId).Get() is null)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"program '{request.ProgramId}' not found"));
        }

        (EventPosition readAfter, EventMark last) = await StartOf(request, context.CancellationToken);
        if (streams.Ended)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, StoppingMessage));
        }

        if (feed.TryEnter(request.ProgramId) is { } full)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, full));
        }

        using OpenStreams.Lease open = streams.Open();
        using var ending = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, streams.Ending);
        try
        {
            // Headers now, before any event: a client that waits for them knows where its stream starts.
            await context.WriteResponseHeadersAsync([]);
            var events = new List<V1.Event>();
            await foreach (IReadOnlyList<PositionedEntry> batch in feed.FollowAsync(request.ProgramId, readAfter, ending.Token))
            {
                events.Clear();
                foreach (PositionedEntry entry in batch)
                {
                    int count = LoyaltyEvents.CountOf(entry.Entry);
                    for (int index = 0; index < count; index++)
                    {
                        var mark = new EventMark(entry.Position, index);
                        if (mark.CompareTo(last) > 0)
                        {
                            last = mark;
                            if (types is null || types.Contains(LoyaltyEvents.TypeOf(entry.Entry, index)))
                            {
                                events.Add(LoyaltyEvents.ToEvent(entry, index));
                            }
                        }
                    }
                }

                await WriteAsync(responseStream, events, ending.Token);
            }
        }
        catch (OperationCanceledException) when (streams.Ended && !context.CancellationToken.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, StoppingMessage));
        }
        finally
        {
            feed.Leave(request.ProgramId);
        }
    }

    /// <summary>Writes a batch with one flush: every event but the last only buffered.</summary>
    private static async Task WriteAsync(IServerStreamWriter<V1.Event> stream, List<V1.Event> events, CancellationToken cancellationToken)
    {
        for (int i = 0; i < events.Count; i++)
        {
            stream.WriteOptions = i < events.Count - 1 ? BufferedWrite : null;
            await stream.WriteAsync(events[i], cancellationToken);
        }

        EventMetrics.Streamed.Add(events.Count);
    }

    private static readonly WriteOptions BufferedWrite = new(WriteFlags.BufferHint);

    /// <summary>Where to read from, and the last event the client has (events up to it are skipped).</summary>
    private async Task<(EventPosition ReadAfter, EventMark Last)> StartOf(V1.SubscribeRequest request, CancellationToken cancellationToken)
    {
        if (request.AfterCursor.Length > 0)
        {
            string notOurs = $"after_cursor '{Bounded.Echo(request.AfterCursor)}' is not a cursor this engine gave out";
            GrainCalls.Require(EventCursor.TryParse(request.AfterCursor, out EventPosition position, out int index) ? null : notOurs);
            // A cursor past the ledger's visible end was never given out: following it would skip what comes.
            GrainCalls.Require(position > await store.ReadEventsEndAsync(request.ProgramId, cancellationToken) ? notOurs : null);
            return (EventCursor.ReadFrom(position, index), new EventMark(position, index));
        }

        if (request.FromBeginning)
        {
            return (EventPosition.Start, new EventMark(EventPosition.Start, -1));
        }

        // From now: everything up to the ledger's visible end counts as handled.
        EventPosition end = await store.ReadEventsEndAsync(request.ProgramId, cancellationToken);
        return (end, new EventMark(end, int.MaxValue));
    }

    /// <summary>A filter of event types, or null for all; unknown or too many types are refused with INVALID_ARGUMENT.</summary>
    public static HashSet<string>? ParseTypes(IReadOnlyCollection<string> requested)
    {
        if (requested.Count == 0)
        {
            return null;
        }

        GrainCalls.Require(requested.Count > LoyaltyEvents.TypesPerFilterMax ? $"at most {LoyaltyEvents.TypesPerFilterMax} types" : null);
        foreach (string type in requested)
        {
            GrainCalls.Require(LoyaltyEvents.AllTypes.Contains(type) ? null : $"unknown event type '{Bounded.Echo(type)}'; the README lists the types");
        }

        return [.. requested];
    }
}

/// <summary>An event's place: its entry's position, then its index within the entry.</summary>
public readonly record struct EventMark(EventPosition Position, int Index) : IComparable<EventMark>
{
    /// <inheritdoc />
    public int CompareTo(EventMark other) => Position != other.Position ? Position.CompareTo(other.Position) : Index.CompareTo(other.Index);
}
