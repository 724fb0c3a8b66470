-- Loyalty rules: each entry records the program version it was decided under, when its points
-- become spendable (NULL: at once), and its details as JSON text (the earn breakdown, the tier
-- decision, what a return reversed and from where). Text, not jsonb: the hot path appends,
-- reports cast (details::jsonb) when they need to look inside.
ALTER TABLE ledger_entries
    ADD COLUMN IF NOT EXISTS program_version bigint      NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS available_at    timestamptz NULL,
    ADD COLUMN IF NOT EXISTS details         text        NULL;
