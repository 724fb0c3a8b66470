-- Report totals: per program, UTC day, metric and key (a reward id, or ''), the sum of what that
-- day's entries contribute (Loyalty.Storage.Reports.ReportFacts). They are written in the same
-- transaction as the entries, so a report over them sees exactly the committed ledger. Each batch
-- adds into one of 16 slots chosen at random, so engines committing at the same moment rarely
-- wait for each other's row locks; a report sums the slots. A ledger written before
-- this migration has no totals yet: see report_rebuilds below.
CREATE TABLE IF NOT EXISTS report_totals (
    program_id text NOT NULL,
    day integer NOT NULL,
    metric smallint NOT NULL,
    key text NOT NULL,
    slot smallint NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (program_id, day, metric, key, slot)
);

-- Programs whose totals are to be rebuilt from their ledgers: every program that already has
-- entries when this migration runs. The engine rebuilds them when it starts, before it serves.
CREATE TABLE IF NOT EXISTS report_rebuilds (
    program_id TEXT NOT NULL PRIMARY KEY
);
INSERT INTO report_rebuilds (program_id) SELECT DISTINCT program_id FROM ledger_entries;
