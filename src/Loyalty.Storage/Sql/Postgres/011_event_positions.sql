-- Event positions: the order in which a program's entries become visible, for the event stream
-- and webhooks. A number assigned at insert is not that order: with several engines (or the
-- pair writer) committing at once, a row numbered lower can become visible after a row numbered
-- higher, and a reader that had moved past the higher one would skip it for good. So each row
-- records the id of the transaction that wrote it (commit_tx) and a number within it (pos), and
-- readers return only rows whose transaction is older than the oldest transaction still running
-- (pg_snapshot_xmin of their snapshot): every transaction below that id has ended, and every
-- transaction that ends later has an id at or above it, so it sorts after whatever was read.
ALTER TABLE ledger_entries
    ADD COLUMN commit_tx bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE ledger_entries ADD COLUMN pos bigint;

-- Rows written before this migration share its transaction id; they are numbered by time, each
-- member's in sequence order (by the latest record time of the member's entries so far, so that
-- a clock that stepped back cannot put a member's later entry first).
UPDATE ledger_entries l SET pos = o.n
FROM (
    SELECT program_id, member_id, seq,
           row_number() OVER (ORDER BY member_time, program_id, member_id, seq) AS n
    FROM (
        SELECT program_id, member_id, seq,
               max(recorded_at) OVER (PARTITION BY program_id, member_id ORDER BY seq) AS member_time
        FROM ledger_entries
    ) t
) o
WHERE l.program_id = o.program_id AND l.member_id = o.member_id AND l.seq = o.seq;

ALTER TABLE ledger_entries ALTER COLUMN pos SET NOT NULL;

-- New rows are numbered by an identity that starts after the last migrated row.
DO $$
DECLARE
    next_pos bigint;
BEGIN
    SELECT coalesce(max(pos), 0) + 1 INTO next_pos FROM ledger_entries;
    EXECUTE format('ALTER TABLE ledger_entries ALTER COLUMN pos ADD GENERATED ALWAYS AS IDENTITY (START WITH %s CACHE 100)', next_pos);
END
$$;

CREATE INDEX ix_ledger_entries_events ON ledger_entries (program_id, commit_tx, pos);
