-- The enrolment entries of a program, one per member: a program-wide reschedule after a change
-- of the expiry policy reads them. Partial, so ordinary purchases never touch it.
CREATE INDEX IF NOT EXISTS ix_ledger_entries_enrolments ON ledger_entries (program_id) WHERE kind = 1;
