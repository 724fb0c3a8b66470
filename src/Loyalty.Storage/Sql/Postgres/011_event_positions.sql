-- Event positions: the order in which a program's entries become visible, for the event stream
-- and webhooks. A number assigned at insert is not that order: with several engines (or the
-- pair writer) committing at once, a row numbered lower can become visible after a row numbered
-- higher, and a reader that had moved past the higher one would skip it for good. So each row
-- records the id of the transaction that wrote it (commit_tx) and a number within it (pos), and
-- readers return only rows whose transaction is older than the oldest transaction still running
-- (pg_snapshot_xmin of their snapshot): every transaction below that id has ended, and every
-- transaction that ends later has an id at or above it, so it sorts after whatever was read.
-- Existing rows take the id of the migration's transaction, in their physical order.
ALTER TABLE ledger_entries
    ADD COLUMN IF NOT EXISTS commit_tx bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE ledger_entries
    ADD COLUMN IF NOT EXISTS pos bigint GENERATED ALWAYS AS IDENTITY (CACHE 100);
CREATE INDEX IF NOT EXISTS ix_ledger_entries_events ON ledger_entries (program_id, commit_tx, pos);
