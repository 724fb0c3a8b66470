-- A programme with 10,000,000 ledger entries, for measuring reports: program 'big', 200,000 members
-- x 50 entries spread over 330 days of 2026, every day (an enrolment, purchases, and every tenth
-- entry a redemption). Run it with psql on an engine's migrated PostgreSQL database in which
-- program 'big' exists; it lists the program for a rebuild of its report totals, which the
-- engine does when it next starts (see the README, Performance, "Reports").
INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, txn_id, fingerprint, store_id, amount_minor, currency,
                            reason, reference, occurred_at, recorded_at, program_version, available_at, details)
SELECT 'big', 'm' || m, s,
       CASE WHEN s = 1 THEN 1 WHEN s % 10 = 0 THEN 7 ELSE 2 END,
       CASE WHEN s = 1 THEN 50 WHEN s % 10 = 0 THEN -30 ELSE 40 END,
       CASE WHEN s = 1 THEN NULL ELSE 't' || m || '-' || s END,
       0, 'store-1',
       CASE WHEN s = 1 THEN 0 WHEN s % 10 = 0 THEN 450 ELSE 4000 END,
       'USD', NULL, NULL, t.ts, t.ts, 1, NULL,
       CASE WHEN s = 1 THEN '{"tier_after":"standard"}'
            WHEN s % 10 = 0 THEN '{"reward_id":"mug","quantity":1,"lots":[{"lot_id":"x","points":30,"expires_at":"2027-06-01T00:00:00Z"}]}'
            ELSE '{"components":[{"kind":"Base","code":"base","points":40}],"tier_after":"standard","activity":' || CASE WHEN s = 2 THEN 31 ELSE 2 END || '}' END
FROM generate_series(1, 200000) m
CROSS JOIN generate_series(1, 50) s
CROSS JOIN LATERAL (SELECT timestamptz '2026-01-01 00:00:00+00' + ((m + s * 7) % 330) * interval '1 day' + (m % 86400) * interval '1 second' AS ts) t;
INSERT INTO report_rebuilds (program_id) VALUES ('big') ON CONFLICT DO NOTHING;
