-- Personal data, kept apart from the ledger: the ledger is append-only and keeps amounts for
-- program accounting, while a member's profile is replaced on every change and deleted when the
-- member asks to be erased. One row per member; fields is a JSON object of text values;
-- updated_at is microseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS member_profiles (
    program_id TEXT    NOT NULL,
    member_id  TEXT    NOT NULL,
    fields     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    CONSTRAINT pk_member_profiles PRIMARY KEY (program_id, member_id)
);
