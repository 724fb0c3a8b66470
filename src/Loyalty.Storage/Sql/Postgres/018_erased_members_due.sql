-- An erased member's membership now lapses at its term's end and its tier is still reviewed; a
-- member erased before this version has no due time for them, nor has a member merged away by an
-- earlier version after its membership's term ended and before its lapse was recorded. Every
-- erased or merged-away member is brought due once (few in any programme): it wakes, writes what
-- is due already, and schedules the rest.
INSERT INTO member_due (program_id, member_id, due_at)
SELECT DISTINCT program_id, member_id, to_timestamp(0) FROM ledger_entries WHERE kind IN (15, 16)
ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = LEAST(member_due.due_at, excluded.due_at);
