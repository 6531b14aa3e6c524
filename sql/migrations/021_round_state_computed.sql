-- The round's state is computed where it is read (wallet_round_state, sql/functions/rounds.sql)
-- rather than stored: the generated column of 016 was evaluated and written on every bet and
-- result. Measured with pgbench on seamless_batch (one result per transaction, synchronous_commit
-- off, so that CPU decides): 2,545 transactions/s with the column, 2,645 without, 2,740 before 016.
ALTER TABLE rounds DROP COLUMN state;
