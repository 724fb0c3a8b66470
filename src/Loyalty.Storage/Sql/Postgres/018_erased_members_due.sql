-- An erased member's membership now lapses at its term's end and its tier is still reviewed; a
-- member erased before this version has no due time for them. Every erased member is brought due
-- once (a handful in any programme): it wakes, writes what is due already, and schedules the rest.
INSERT INTO member_due (program_id, member_id, due_at)
SELECT DISTINCT program_id, member_id, to_timestamp(0) FROM ledger_entries WHERE kind = 15
ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = LEAST(member_due.due_at, excluded.due_at);
