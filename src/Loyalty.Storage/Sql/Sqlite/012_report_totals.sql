-- Report totals: per program, UTC day, metric and key (a reward id, or ''), the sum of what that
-- day's entries contribute (Loyalty.Storage.Reports.ReportFacts), written in the same transaction
-- as the entries. One engine writes the file, so every total is in slot 0. A ledger written before
-- this migration has no totals yet: see report_rebuilds below.
CREATE TABLE IF NOT EXISTS report_totals (
    program_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    metric INTEGER NOT NULL,
    key TEXT NOT NULL,
    slot INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (program_id, day, metric, key, slot)
) WITHOUT ROWID;

-- Programs whose totals are to be rebuilt from their ledgers: every program that already has
-- entries when this migration runs. The engine rebuilds them when it starts, before it serves.
CREATE TABLE IF NOT EXISTS report_rebuilds (
    program_id TEXT NOT NULL PRIMARY KEY
);
INSERT INTO report_rebuilds (program_id) SELECT DISTINCT program_id FROM ledger_entries;
