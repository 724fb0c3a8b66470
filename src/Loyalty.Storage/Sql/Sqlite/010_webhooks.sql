-- Webhook subscriptions: one row per program and webhook id. The secret is kept readable, not
-- hashed, because every delivery is signed with it; the API shows it only to its caller, at
-- creation and at rotation. The previous secret keeps signing until previous_secret_until, so a
-- receiver can switch keys without losing deliveries. position is the event cursor up to which
-- every event was delivered. The lease (lease_owner, lease_until) lets exactly one node deliver a
-- subscription at a time, as on PostgreSQL, although one file serves one engine. Times are
-- microseconds since the Unix epoch; enabled is 0 or 1.
CREATE TABLE IF NOT EXISTS webhooks (
    program_id            TEXT    NOT NULL,
    webhook_id            TEXT    NOT NULL,
    url                   TEXT    NOT NULL,
    types                 TEXT    NOT NULL,
    secret                TEXT    NOT NULL,
    key_version           INTEGER NOT NULL,
    previous_secret       TEXT    NULL,
    previous_secret_until INTEGER NULL,
    enabled               INTEGER NOT NULL,
    disabled_reason       TEXT    NULL,
    failing_since         INTEGER NULL,
    position              TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    lease_owner           TEXT    NULL,
    lease_until           INTEGER NULL,
    CONSTRAINT pk_webhooks PRIMARY KEY (program_id, webhook_id)
);

-- The delivery log: one row per attempt to deliver one event to one webhook. It is bounded per
-- webhook (the store deletes all but the newest attempts as it appends), so it cannot grow with
-- time; the index serves both the newest-first reads and that trimming. AUTOINCREMENT keeps ids
-- ascending even after the newest rows were deleted, so a page cursor never sees an id reused.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    program_id  TEXT    NOT NULL,
    webhook_id  TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    member_id   TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    latency_ms  INTEGER NOT NULL,
    error       TEXT    NULL,
    manual      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_webhook_attempts_webhook ON webhook_attempts (program_id, webhook_id, id);
