using System.Text.Json;
using StatusCode = global::Grpc.Core.StatusCode;

namespace Loyalty.Host.Grpc;

/// <summary>
/// What an HTTP/JSON request body would become, read from its bytes before JSON transcoding parses
/// it (the JSON counterpart of <see cref="MessageShape"/>). The body's byte limit does not bound
/// the objects it becomes: <c>{}</c> costs three bytes with its comma and a few hundred in memory
/// (a program's campaign makes five empty lists), so 4 MiB of empty campaigns or line items parse
/// into hundreds of megabytes before any count of the API is checked. The walk allocates nothing.
/// </summary>
public static class JsonShape
{
    /// <summary>
    /// Members any one JSON array or object may hold: the API's longest list (a program's product
    /// rules, <see cref="Limits.ProductRulesMax"/>). A longer one is refused before it is parsed;
    /// the API's own limits, checked after the parse, are all at or below it.
    /// </summary>
    public const int MembersMax = Limits.ProductRulesMax;

    /// <summary>
    /// Body bytes per object, on average, for the objects of a body to be accepted: an object with
    /// anything in it takes at least ten with its separator (<c>{"sku":"a"},</c>); only a body made
    /// mostly of empty or near-empty objects is refused.
    /// </summary>
    public const int BytesPerObjectMin = 10;

    /// <summary>Objects any body may hold whatever its size, and empty objects (<c>{}</c>) any body may hold at all.</summary>
    public const int ObjectsFree = 64;

    /// <summary>
    /// The longest JSON string, in bytes as sent: the API's longest text is a webhook's URL of 2,000
    /// characters, which its escapes (six bytes a character at most) keep within this. A longer one
    /// is refused here: what JSON transcoding cannot convert (an enum's name, a number written as a
    /// string), it quotes back whole in its error.
    /// </summary>
    public const int StringBytesMax = 12_288;

    /// <summary>The longest property name, in bytes as sent: the API's longest field name is far shorter; an unknown one is quoted back whole.</summary>
    public const int PropertyNameBytesMax = 128;

    /// <summary>The longest JSON number, in bytes as sent: an int64 takes 20, a double in full at most about 25.</summary>
    public const int NumberBytesMax = 64;

    /// <summary>Nesting followed at most; the API's messages nest a handful of levels.</summary>
    public const int DepthMax = 32;

    /// <summary>The most objects a body of <paramref name="bodyBytes"/> may hold (see <see cref="BytesPerObjectMin"/>).</summary>
    public static long ObjectsMaxOf(long bodyBytes) => ObjectsFree + (bodyBytes / BytesPerObjectMin);

    /// <summary>
    /// Why <paramref name="json"/> is refused before it is parsed, or null when its shape is
    /// within the limits above: the status (RESOURCE_EXHAUSTED for a body larger in what it
    /// becomes than its limits allow, INVALID_ARGUMENT for one that is not JSON) and a message
    /// that quotes nothing of the body.
    /// </summary>
    public static (StatusCode Code, string Message)? Check(ReadOnlySpan<byte> json)
    {
        // A byte order mark is not JSON, but JSON transcoding's reader skips one, and some writers send it.
        if (json.StartsWith("\uFEFF"u8))
        {
            json = json[3..];
        }

        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = DepthMax, CommentHandling = JsonCommentHandling.Disallow });
        Span<int> members = stackalloc int[DepthMax + 1];
        long objects = 0, objectsMax = ObjectsMaxOf(json.Length);
        int empty = 0;
        JsonTokenType previous = JsonTokenType.None;
        try
        {
            while (reader.Read())
            {
                JsonTokenType token = reader.TokenType;
                int depth = reader.CurrentDepth;
                if (token is not (JsonTokenType.EndObject or JsonTokenType.EndArray) && depth > 0 && previous != JsonTokenType.PropertyName
                    && ++members[depth - 1] > MembersMax)
                {
                    return TooLarge($"a JSON array or object of the body holds more than {MembersMax} members");
                }

                switch (token)
                {
                    case JsonTokenType.StartObject or JsonTokenType.StartArray:
                        members[depth] = 0;
                        if (token == JsonTokenType.StartObject && ++objects > objectsMax)
                        {
                            return TooLarge($"the body holds more than {objectsMax} JSON objects (at most one per {BytesPerObjectMin} bytes, and {ObjectsFree})");
                        }

                        break;
                    case JsonTokenType.EndObject when previous == JsonTokenType.StartObject && ++empty > ObjectsFree:
                        return TooLarge($"the body holds more than {ObjectsFree} empty JSON objects");
                    case JsonTokenType.PropertyName when reader.ValueSpan.Length > PropertyNameBytesMax:
                        return (StatusCode.InvalidArgument, $"a property name of the body is longer than {PropertyNameBytesMax} bytes: no field of the API is");
                    case JsonTokenType.String when reader.ValueSpan.Length > StringBytesMax:
                        return (StatusCode.InvalidArgument, $"a string of the body is longer than {StringBytesMax} bytes: no text of the API is");
                    case JsonTokenType.Number when reader.ValueSpan.Length > NumberBytesMax:
                        return (StatusCode.InvalidArgument, $"a number of the body is longer than {NumberBytesMax} bytes: no number of the API is");
                }

                previous = token;
            }
        }
        catch (JsonException e)
        {
            // The reader's message names a position and at most a character, never the body's text.
            return (StatusCode.InvalidArgument, "the body is not valid JSON: " + Bounded.Detail(e.Message));
        }

        return null;
    }

    private static (StatusCode, string) TooLarge(string what) => (StatusCode.ResourceExhausted, what);
}
