-- The due schedule: one row per member that has work to do by the clock (points expire, an
-- "expiring soon" warning, a reservation lapses), with the earliest such time. Silos poll the
-- index on due_at for rows that are due, so no scan of all members is ever needed; a claim
-- pushes due_at forward by a lease, so several silos never wake the same member at once and a
-- silo that dies mid-wake leaves the row to be claimed again.
CREATE TABLE IF NOT EXISTS member_due (
    program_id text        NOT NULL,
    member_id  text        NOT NULL,
    due_at     timestamptz NOT NULL,
    CONSTRAINT pk_member_due PRIMARY KEY (program_id, member_id)
);

CREATE INDEX IF NOT EXISTS ix_member_due_at ON member_due (due_at);
