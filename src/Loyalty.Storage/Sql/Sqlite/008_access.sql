-- API keys. The secret is never stored: only its SHA-256 (the secrets are 256 random bits, so a
-- fast hash is enough). program_id is '' for operator keys; store_ids is a comma-separated list
-- ('' for any store). Times are microseconds since the Unix epoch; changed_at is the time of the
-- last change, which the gateway polls.
CREATE TABLE IF NOT EXISTS access_keys (
    key_id        TEXT    NOT NULL,
    program_id    TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    store_ids     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    expires_at    INTEGER NULL,
    revoked_at    INTEGER NULL,
    changed_at    INTEGER NOT NULL,
    CONSTRAINT pk_access_keys PRIMARY KEY (key_id)
);
CREATE INDEX IF NOT EXISTS ix_access_keys_changed_at ON access_keys (changed_at);

-- Who did what: one row per support, admin or key-management call, written before the call runs
-- (outcome 'STARTED') and completed with its status code name after.
CREATE TABLE IF NOT EXISTS audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    program_id TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    key_id     TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_audit_log_program ON audit_log (program_id, id);
