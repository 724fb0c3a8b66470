-- Store credit's report figures were given the codes 90-92, which NPS answers already used, so
-- the totals of a programme with both mixed them. Store credit now has 100-102. The totals stored
-- under 90-92 cannot be told apart, so every programme that has any is rebuilt from its ledger
-- when the engine next starts, before it serves. Stop every engine of a cluster before starting
-- one of this version: an engine still on the old one would write store credit under 90-92 again.
INSERT OR IGNORE INTO report_rebuilds (program_id)
SELECT DISTINCT program_id FROM report_totals WHERE metric IN (90, 91, 92);
