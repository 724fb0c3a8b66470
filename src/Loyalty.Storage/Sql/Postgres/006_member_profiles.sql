-- Personal data, kept apart from the ledger: the ledger is append-only and keeps amounts for
-- program accounting, while a member's profile is replaced on every change and deleted when the
-- member asks to be erased. One row per member; fields is a JSON object of text values.
CREATE TABLE IF NOT EXISTS member_profiles (
    program_id text        NOT NULL,
    member_id  text        NOT NULL,
    fields     text        NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT pk_member_profiles PRIMARY KEY (program_id, member_id)
);
