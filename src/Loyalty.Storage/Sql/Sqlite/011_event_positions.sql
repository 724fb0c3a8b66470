-- Event positions: the order in which a program's entries become visible, for the event stream
-- and webhooks. One engine writes the file, and SQLite lets one write transaction run at a time,
-- so rows are appended in commit order and the rowid (never reused: rows are never deleted) is
-- that order. The index on program_id carries the rowid, so a program's entries after a position
-- are one range of it.
CREATE INDEX IF NOT EXISTS ix_ledger_entries_events ON ledger_entries (program_id);
