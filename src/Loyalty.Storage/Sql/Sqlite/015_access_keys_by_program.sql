-- A key's bounds are counted per program (working keys, keys created in the last 24 hours) while
-- the change holds the key lock; ended keys' rows are kept for good, so the count must not scan them all.
CREATE INDEX IF NOT EXISTS ix_access_keys_program ON access_keys (program_id, created_at);
