-- Loyalty rules: each entry records the program version it was decided under, when its points
-- become spendable (NULL: at once; microseconds since the Unix epoch, UTC), and its details as
-- JSON (the earn breakdown, the tier decision, what a return reversed and from where).
ALTER TABLE ledger_entries ADD COLUMN program_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries ADD COLUMN available_at INTEGER NULL;
ALTER TABLE ledger_entries ADD COLUMN details TEXT NULL;
