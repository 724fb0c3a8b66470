-- The due schedule: one row per member that has work to do by the clock (points expire, an
-- "expiring soon" warning, a reservation lapses), with the earliest such time in microseconds
-- since the Unix epoch. The poller reads the index on due_at for rows that are due, so no scan
-- of all members is ever needed; a claim pushes due_at forward by a lease.
CREATE TABLE IF NOT EXISTS member_due (
    program_id TEXT    NOT NULL,
    member_id  TEXT    NOT NULL,
    due_at     INTEGER NOT NULL,
    CONSTRAINT pk_member_due PRIMARY KEY (program_id, member_id)
);

CREATE INDEX IF NOT EXISTS ix_member_due_at ON member_due (due_at);
