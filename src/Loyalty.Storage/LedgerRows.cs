using System.Data.Common;

namespace Loyalty.Storage;

/// <summary>Reading ledger rows, shared by both dialects; only the timestamp encoding differs.</summary>
internal static class LedgerRows
{
    /// <summary>The select list every ledger query uses, in the order <see cref="ReadAllAsync"/> reads.</summary>
    public const string Columns =
        "program_id, member_id, seq, kind, points, txn_id, fingerprint, store_id, amount_minor, currency, reason, reference, occurred_at, recorded_at";

    /// <summary>Runs the command and maps every row; <paramref name="time"/> decodes a timestamp column.</summary>
    public static async Task<IReadOnlyList<LedgerEntry>> ReadAllAsync(DbCommand command, Func<DbDataReader, int, DateTimeOffset> time, CancellationToken cancellationToken)
    {
        var rows = new List<LedgerEntry>();
        await using DbDataReader r = await command.ExecuteReaderAsync(cancellationToken);
        while (await r.ReadAsync(cancellationToken))
        {
            rows.Add(new LedgerEntry(
                r.GetString(0), r.GetString(1), r.GetInt64(2), (LedgerEntryKind)r.GetInt16(3), new Points(r.GetInt64(4)),
                Text(r, 5), r.GetInt64(6), Text(r, 7), r.GetInt64(8), Text(r, 9), Text(r, 10), Text(r, 11),
                time(r, 12), time(r, 13)));
        }

        return rows;
    }

    private static string? Text(DbDataReader r, int ordinal) => r.IsDBNull(ordinal) ? null : r.GetString(ordinal);
}
