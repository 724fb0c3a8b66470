-- Webhook subscriptions: one row per program and webhook id. The secret is kept readable, not
-- hashed, because every delivery is signed with it; the API shows it only to its caller, at
-- creation and at rotation. The previous secret keeps signing until previous_secret_until, so a
-- receiver can switch keys without losing deliveries. position is the event cursor up to which
-- every event was delivered. The lease (lease_owner, lease_until) lets exactly one node deliver a
-- subscription at a time: a node claims rows whose lease ended, and writes progress only while it
-- still holds the lease.
CREATE TABLE IF NOT EXISTS webhooks (
    program_id            text        NOT NULL,
    webhook_id            text        NOT NULL,
    url                   text        NOT NULL,
    types                 text        NOT NULL,
    secret                text        NOT NULL,
    key_version           integer     NOT NULL,
    previous_secret       text        NULL,
    previous_secret_until timestamptz NULL,
    enabled               boolean     NOT NULL,
    disabled_reason       text        NULL,
    failing_since         timestamptz NULL,
    position              text        NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    lease_owner           text        NULL,
    lease_until           timestamptz NULL,
    CONSTRAINT pk_webhooks PRIMARY KEY (program_id, webhook_id)
);

-- The delivery log: one row per attempt to deliver one event to one webhook. It is bounded per
-- webhook (the store deletes all but the newest attempts as it appends), so it cannot grow with
-- time; the index serves both the newest-first reads and that trimming.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id          bigserial   NOT NULL,
    program_id  text        NOT NULL,
    webhook_id  text        NOT NULL,
    delivery_id text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    member_id   text        NOT NULL,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer     NOT NULL,
    latency_ms  integer     NOT NULL,
    error       text        NULL,
    manual      boolean     NOT NULL,
    CONSTRAINT pk_webhook_attempts PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS ix_webhook_attempts_webhook ON webhook_attempts (program_id, webhook_id, id);
