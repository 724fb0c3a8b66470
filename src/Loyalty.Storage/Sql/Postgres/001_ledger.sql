-- The ledger: append-only, one row per change to a member. The source of truth.
-- (program_id, member_id, seq) orders a member's history and makes two writers of the same
-- member (a split activation in a cluster) collide instead of both succeeding.
-- (program_id, txn_id) makes a POS transaction id count once per program, across members.
CREATE TABLE IF NOT EXISTS ledger_entries (
    program_id   text        NOT NULL,
    member_id    text        NOT NULL,
    seq          bigint      NOT NULL,
    kind         smallint    NOT NULL,
    points       bigint      NOT NULL,
    txn_id       text        NULL,
    fingerprint  bigint      NOT NULL,
    store_id     text        NULL,
    amount_minor bigint      NOT NULL,
    currency     text        NULL,
    reason       text        NULL,
    reference    text        NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    CONSTRAINT pk_ledger_entries PRIMARY KEY (program_id, member_id, seq),
    CONSTRAINT ck_ledger_entries_seq CHECK (seq > 0)
);

CREATE UNIQUE INDEX IF NOT EXISTS ux_ledger_entries_txn ON ledger_entries (program_id, txn_id);
