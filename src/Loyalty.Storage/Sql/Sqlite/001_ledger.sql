-- The ledger: append-only, one row per change to a member. The source of truth.
-- (program_id, member_id, seq) orders a member's history and makes two writers of the same
-- member collide instead of both succeeding; (program_id, txn_id) makes a POS transaction id
-- count once per program. Times are microseconds since the Unix epoch, UTC.
CREATE TABLE IF NOT EXISTS ledger_entries (
    program_id   TEXT    NOT NULL,
    member_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq > 0),
    kind         INTEGER NOT NULL,
    points       INTEGER NOT NULL,
    txn_id       TEXT    NULL,
    fingerprint  INTEGER NOT NULL,
    store_id     TEXT    NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT    NULL,
    reason       TEXT    NULL,
    reference    TEXT    NULL,
    occurred_at  INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (program_id, member_id, seq)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS ux_ledger_entries_txn ON ledger_entries (program_id, txn_id);
