-- A round keeps the id of its first posting instead of the ids of all of them. The array of 016
-- grew the round on every bet and result (a wider row to write each time, and an update of it
-- on result_change too): in `make bench`, Postgres CPU per event was 0.267-0.271 ms with it,
-- 0.238 ms before 016. The round's timeline reads its postings off the player's ledger index
-- from the round's start instead (wallet_round_transactions), and a player's rounds are listed
-- at their first posting.
ALTER TABLE rounds ADD COLUMN first_transaction bigint;
UPDATE rounds SET first_transaction = transactions[1] WHERE cardinality(transactions) > 0;
ALTER TABLE rounds DROP COLUMN transactions;
