using System.Buffers;
using System.Data.Common;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Loyalty.Storage;

/// <summary>Reading ledger rows, shared by both dialects; only the timestamp encoding differs.</summary>
internal static class LedgerRows
{
    /// <summary>The select list every ledger query uses, in the order <see cref="ReadAllAsync"/> reads.</summary>
    public const string Columns =
        "program_id, member_id, seq, kind, points, txn_id, fingerprint, store_id, amount_minor, currency, reason, reference, occurred_at, recorded_at, " +
        "program_version, available_at, details";

    /// <summary>Runs the command and maps every row; <paramref name="time"/> decodes a timestamp column.</summary>
    public static async Task<IReadOnlyList<LedgerEntry>> ReadAllAsync(DbCommand command, Func<DbDataReader, int, DateTimeOffset> time, CancellationToken cancellationToken)
    {
        var rows = new List<LedgerEntry>();
        await using DbDataReader r = await command.ExecuteReaderAsync(cancellationToken);
        while (await r.ReadAsync(cancellationToken))
        {
            rows.Add(ReadEntry(r, time));
        }

        return rows;
    }

    /// <summary>
    /// Runs a command whose select list is <see cref="Columns"/> followed by the two columns of the
    /// entry's event position, and maps every row.
    /// </summary>
    public static async Task<IReadOnlyList<PositionedEntry>> ReadPositionedAsync(DbCommand command, Func<DbDataReader, int, DateTimeOffset> time, CancellationToken cancellationToken)
    {
        var rows = new List<PositionedEntry>();
        await using DbDataReader r = await command.ExecuteReaderAsync(cancellationToken);
        while (await r.ReadAsync(cancellationToken))
        {
            rows.Add(new PositionedEntry(new EventPosition(r.GetInt64(17), r.GetInt64(18)), ReadEntry(r, time)));
        }

        return rows;
    }

    private static LedgerEntry ReadEntry(DbDataReader r, Func<DbDataReader, int, DateTimeOffset> time) =>
        new(r.GetString(0), r.GetString(1), r.GetInt64(2), (LedgerEntryKind)r.GetInt16(3), new Points(r.GetInt64(4)),
            Text(r, 5), r.GetInt64(6), Text(r, 7), r.GetInt64(8), Text(r, 9), Text(r, 10), Text(r, 11),
            time(r, 12), time(r, 13), r.GetInt64(14), r.IsDBNull(15) ? null : time(r, 15), DetailsJson.Read((LedgerEntryKind)r.GetInt16(3), Text(r, 16)));

    private static string? Text(DbDataReader r, int ordinal) => r.IsDBNull(ordinal) ? null : r.GetString(ordinal);
}

/// <summary>
/// The details column: compact JSON with snake_case names and enum names, so reports can read it
/// (<c>details::jsonb -&gt; 'components'</c> on PostgreSQL). Every entry carries one, so it is kept
/// small: defaults and empty lists are left out, and <c>tier_before</c> only appears when it
/// differs from <c>tier_after</c>.
/// </summary>
public static class DetailsJson
{
    private static readonly JsonSerializerOptions Options = CreateOptions();

    /// <summary>The JSON text of the details, or null.</summary>
    public static string? Write(EntryDetails? details) =>
        details is null ? null : JsonSerializer.Serialize(details, Options.GetTypeInfo(details.GetType()));

    /// <summary>
    /// The same JSON encoded as UTF-8, or null: what the ledger stores, without making a string
    /// (twice the bytes, and transcoded back to UTF-8 by SQLite's binding) for every entry.
    /// </summary>
    public static byte[]? WriteUtf8(EntryDetails? details) => details switch
    {
        null => null,
        EarnDetails earn when EarnDetailsJson.Handles(earn) => EarnDetailsJson.Write(earn),
        _ => WriteUtf8BySerializer(details),
    };

    /// <summary>
    /// The same JSON for the ledger's queue: an earn's (most entries) in an array of
    /// <paramref name="pool"/>, which the queue gives back once the entry's batch is written;
    /// none for no details.
    /// </summary>
    internal static EncodedDetails Encode(EntryDetails? details, ArrayPool<byte> pool) => details switch
    {
        null => default,
        EarnDetails earn when EarnDetailsJson.Handles(earn) => EarnDetailsJson.Write(earn, pool),
        _ => new EncodedDetails(WriteUtf8BySerializer(details)),
    };

    /// <summary>The serializer's UTF-8 JSON of <paramref name="details"/>, which the earn's own writer must equal.</summary>
    internal static byte[] WriteUtf8BySerializer(EntryDetails details) =>
        JsonSerializer.SerializeToUtf8Bytes(details, Options.GetTypeInfo(details.GetType()));

    /// <summary>
    /// The details of an entry of <paramref name="kind"/> from their JSON text, as that kind's record;
    /// null when there is no text or the kind has no details (rows written before details were split
    /// by kind may hold an empty object for those). The names are the same for every kind, so rows
    /// written as one shared record read as the record of their kind.
    /// </summary>
    public static EntryDetails? Read(LedgerEntryKind kind, string? json)
    {
        if (json is null || EntryDetails.For(kind) is not { } type)
        {
            return null;
        }

        var details = (EntryDetails?)JsonSerializer.Deserialize(json, Options.GetTypeInfo(type)) ?? throw new JsonException("The details column holds null.");
        return details.WithDefaults();
    }

    private static JsonSerializerOptions CreateOptions()
    {
        var options = new JsonSerializerOptions(DetailsJsonContext.Default.Options)
        {
            TypeInfoResolver = DetailsJsonContext.Default.WithAddedModifier(static info =>
            {
                if (!typeof(EntryDetails).IsAssignableFrom(info.Type))
                {
                    return;
                }

                foreach (JsonPropertyInfo property in info.Properties)
                {
                    // Empty lists of the entry itself are left out; nested records (a merge's transfer) keep theirs.
                    if (property.PropertyType != typeof(string) && typeof(System.Collections.IEnumerable).IsAssignableFrom(property.PropertyType))
                    {
                        property.ShouldSerialize = static (_, value) => value is System.Collections.ICollection { Count: > 0 };
                    }

                    if (property.Name == "tier_before" && typeof(ITierOutcome).IsAssignableFrom(info.Type))
                    {
                        property.ShouldSerialize = static (owner, value) => value is not null && !Equals(value, ((ITierOutcome)owner).TierAfter);
                    }
                }
            }),
        };
        options.MakeReadOnly();
        return options;
    }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingDefault,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(EnrolDetails))]
[JsonSerializable(typeof(EarnDetails))]
[JsonSerializable(typeof(ReturnDetails))]
[JsonSerializable(typeof(AdjustDetails))]
[JsonSerializable(typeof(FlagsDetails))]
[JsonSerializable(typeof(RedeemDetails))]
[JsonSerializable(typeof(ReserveDetails))]
[JsonSerializable(typeof(ReservationEndDetails))]
[JsonSerializable(typeof(ExpireDetails))]
[JsonSerializable(typeof(ExpiryWarningDetails))]
[JsonSerializable(typeof(ReferralRewardDetails))]
[JsonSerializable(typeof(ProfileDetails))]
[JsonSerializable(typeof(MergedAwayDetails))]
[JsonSerializable(typeof(MergedInDetails))]
[JsonSerializable(typeof(RepointedDetails))]
[JsonSerializable(typeof(ReferralSettledDetails))]
[JsonSerializable(typeof(FeedbackDetails))]
[JsonSerializable(typeof(BonusDayBookedDetails))]
[JsonSerializable(typeof(BirthdayDetails))]
[JsonSerializable(typeof(MembershipStartedDetails))]
[JsonSerializable(typeof(MembershipRenewedDetails))]
[JsonSerializable(typeof(MembershipCancelledDetails))]
[JsonSerializable(typeof(MembershipLapsedDetails))]
[JsonSerializable(typeof(TradeInSubmittedDetails))]
[JsonSerializable(typeof(TradeInAcceptedDetails))]
[JsonSerializable(typeof(TradeInRejectedDetails))]
[JsonSerializable(typeof(TierReviewedDetails))]
[JsonSerializable(typeof(ReferralLinkDetails))]
[JsonSerializable(typeof(MergeSettledDetails))]
internal sealed partial class DetailsJsonContext : JsonSerializerContext;
