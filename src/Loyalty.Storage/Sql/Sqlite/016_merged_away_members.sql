-- A member merged into another now leaves the report's member count and the tier it held
-- (report metric 41, and a tier left); before, a merged-away duplicate was counted for good, in
-- the members that participation and lifetime value divide by, and in its tier. Every programme
-- with a merge is rebuilt from its ledger when the engine next starts, before it serves (one
-- scan of the ledger's entry kinds). Stop every engine of a cluster before starting one of this
-- version: an engine still on the old one would leave the next merges out again.
INSERT OR IGNORE INTO report_rebuilds (program_id)
SELECT DISTINCT program_id FROM ledger_entries WHERE kind = 16;
