-- API keys. The secret is never stored: only its SHA-256 (the secrets are 256 random bits, so a
-- fast hash is enough; a slow one would only slow every call). program_id is '' for operator
-- keys; store_ids is a comma-separated list ('' for any store). changed_at is the database's
-- time of the last change, so that every node can pick up new and revoked keys by polling.
CREATE TABLE IF NOT EXISTS access_keys (
    key_id        text        NOT NULL,
    program_id    text        NOT NULL,
    scope         text        NOT NULL,
    store_ids     text        NOT NULL,
    name          text        NOT NULL,
    secret_sha256 text        NOT NULL,
    created_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    expires_at    timestamptz NULL,
    revoked_at    timestamptz NULL,
    changed_at    timestamptz NOT NULL,
    CONSTRAINT pk_access_keys PRIMARY KEY (key_id)
);
CREATE INDEX IF NOT EXISTS ix_access_keys_changed_at ON access_keys (changed_at);

-- Who did what: one row per support, admin or key-management call, written before the call runs
-- (outcome 'STARTED') and completed with its status code name after.
CREATE TABLE IF NOT EXISTS audit_log (
    id         bigserial   NOT NULL,
    program_id text        NOT NULL,
    at         timestamptz NOT NULL,
    key_id     text        NOT NULL,
    method     text        NOT NULL,
    target     text        NOT NULL,
    outcome    text        NOT NULL,
    CONSTRAINT pk_audit_log PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS ix_audit_log_program ON audit_log (program_id, id);
