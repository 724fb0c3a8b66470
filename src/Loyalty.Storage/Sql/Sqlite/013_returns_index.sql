-- The returns of one purchase, by the purchase's transaction id (a return's reference): a member
-- keeps the progress of its most recent returned purchases only, and reads the rest from here.
-- Partial, so ordinary purchases never touch it.
CREATE INDEX IF NOT EXISTS ix_ledger_entries_returns ON ledger_entries (program_id, reference) WHERE kind = 4;
