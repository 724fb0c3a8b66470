-- A tier review that lowers a member's tier is now written when it falls due, and the member's due
-- time includes its next review; a member who last changed before this version has no such time.
-- Every member who ever bought (or took in a merge), and so may hold a tier above the entry tier,
-- is brought due once: it wakes, writes any downgrade already due, and schedules its next review.
-- The due scheduler works through them at its own pace, a lease at a time (due since 1970, 0
-- microseconds since the Unix epoch: at once).
INSERT INTO member_due (program_id, member_id, due_at)
SELECT DISTINCT program_id, member_id, 0 FROM ledger_entries WHERE kind IN (2, 17)
ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = min(member_due.due_at, excluded.due_at);
