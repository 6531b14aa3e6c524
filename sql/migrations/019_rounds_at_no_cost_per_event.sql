-- The round's two indexes of 016 cost every round: rounds_open (a partial index on closed_at IS
-- NULL) makes the result's update of the round non-HOT, and rounds_by_player is one more index
-- entry per round. Measured in `make bench` on one machine: Postgres CPU per event 0.289 ms with
-- them, 0.263 ms without (0.245 ms before 016), and the ratio to pgbench 0.57-0.76 with them,
-- 0.84 without (0.83-0.84 before). So:
--
-- - a player's rounds are listed through the ledger's ledger_by_player index, each round at its
--   first posting (rounds.transactions[1]), with nothing more written per event;
-- - stale rounds are found by a sweep (wallet_sweep_stale, sql/functions/rounds.sql) that every
--   minute reads the rounds that came of age since its last run, through a BRIN index on
--   created_at (rows arrive in time order, so a BRIN range is a few pages; its upkeep per insert
--   is next to nothing and it leaves updates HOT), and keeps the ones still open in stale_rounds.
DROP INDEX rounds_open;
DROP INDEX rounds_by_player;
CREATE INDEX rounds_by_time ON rounds USING brin (created_at);

-- Rounds found stale by a sweep. A row stays until a sweep finds its round closed or settled;
-- every reader checks the round itself, so a row that outlived its round's staleness says nothing.
CREATE TABLE stale_rounds (
    provider    text NOT NULL,
    player_id   text NOT NULL,
    round_id    text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, player_id, round_id)
);
CREATE INDEX stale_rounds_by_time ON stale_rounds (created_at, provider, player_id, round_id);

-- How far the sweeps have read: every round created before `swept_to` was looked at once it was
-- old enough. One row.
CREATE TABLE stale_sweep (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    swept_to  timestamptz NOT NULL
);
INSERT INTO stale_sweep (swept_to) VALUES ('-infinity');
