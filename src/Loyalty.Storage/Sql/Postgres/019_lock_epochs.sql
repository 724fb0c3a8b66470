-- Epochs of the named locks (ILedgerStore.LockAsync): a fencing token per hold. Each hold takes
-- the next value of the sequence once the lock is held and records it as its lock's latest, so a
-- later holder's epoch is always larger. Written in a short transaction of its own: the lock's
-- own transaction must not be given a transaction id, as the event readers wait for every
-- transaction that has one (011_event_positions.sql).
--
-- A batch with entries written under an epoch (a step of a change made at a program's desk)
-- reads their locks' rows FOR SHARE and leaves out the entries whose lock was taken since: a
-- newer holder then waits to record its epoch until that batch has committed, so whatever it
-- reads afterwards includes the batch's entries, or the batch saw its epoch and wrote none.
CREATE SEQUENCE IF NOT EXISTS lock_epochs AS bigint CACHE 1 NO CYCLE;

-- A row is never deleted: a lock without one fences nothing.
CREATE TABLE IF NOT EXISTS lock_epochs_latest (
    name  text   PRIMARY KEY,
    epoch bigint NOT NULL
);
