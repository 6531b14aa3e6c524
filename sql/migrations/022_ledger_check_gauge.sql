-- The last ledger check's result, for the wallet_ledger_check_* gauges (app/gauges.py). One row:
-- every process reads it, so each reports the same result, and one process at a time (under an
-- advisory lock) runs the check once it is older than WALLET_LEDGER_CHECK_SECONDS.
CREATE TABLE ledger_check_last (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    finished_at  timestamptz NOT NULL,
    problems     integer NOT NULL CHECK (problems >= 0)
);

-- wallet_outbox_events{state="dead"} is counted every 15 s by each process: without this, by a
-- scan of every event ever sent (pending ones have operator_events_due).
CREATE INDEX operator_events_dead ON operator_events (dead_at) WHERE dead_at IS NOT NULL;
