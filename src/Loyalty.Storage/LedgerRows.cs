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
            time(r, 12), time(r, 13), r.GetInt64(14), r.IsDBNull(15) ? null : time(r, 15), DetailsJson.Read(Text(r, 16)));

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
    private static readonly JsonTypeInfo<EntryDetails> Info = CreateInfo();

    /// <summary>The JSON text of the details, or null.</summary>
    public static string? Write(EntryDetails? details) =>
        details is null ? null : JsonSerializer.Serialize(details, Info);

    /// <summary>The details from their JSON text, or null.</summary>
    public static EntryDetails? Read(string? json)
    {
        if (json is null)
        {
            return null;
        }

        // The generated deserializer sets absent init-only lists to null: restore the empty defaults.
        EntryDetails details = JsonSerializer.Deserialize(json, Info) ?? throw new JsonException("The details column holds null.");
        return details with
        {
            Components = details.Components ?? [],
            CapsHit = details.CapsHit ?? [],
            TierBefore = details.TierBefore ?? details.TierAfter,
        };
    }

    private static JsonTypeInfo<EntryDetails> CreateInfo()
    {
        var options = new JsonSerializerOptions(DetailsJsonContext.Default.Options)
        {
            TypeInfoResolver = DetailsJsonContext.Default.WithAddedModifier(static info =>
            {
                foreach (JsonPropertyInfo property in info.Properties)
                {
                    // Empty lists of the entry itself are left out; nested records (a merge's transfer) keep theirs.
                    if (info.Type == typeof(EntryDetails) && property.PropertyType != typeof(string) && typeof(System.Collections.IEnumerable).IsAssignableFrom(property.PropertyType))
                    {
                        property.ShouldSerialize = static (_, value) => value is System.Collections.ICollection { Count: > 0 };
                    }

                    if (info.Type == typeof(EntryDetails) && property.Name == "tier_before")
                    {
                        property.ShouldSerialize = static (owner, value) => value is not null && !Equals(value, ((EntryDetails)owner).TierAfter);
                    }
                }
            }),
        };
        return (JsonTypeInfo<EntryDetails>)options.GetTypeInfo(typeof(EntryDetails));
    }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingDefault,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(EntryDetails))]
internal sealed partial class DetailsJsonContext : JsonSerializerContext;
