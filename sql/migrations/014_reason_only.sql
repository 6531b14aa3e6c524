-- The posting functions answer a reason only. Its R-code follows from the reason, and the one
-- place that pairs them is app/seamless/outcome.py (Reason): SQL spelling the code beside the
-- reason in some fifty places was a second copy of that table.
--
-- The replay records keep everything a replay answers (reason, detail, transaction id,
-- duplicate); a record written before this migration is replayed as it was, its code derived
-- from its reason as it was then.
--
-- wallet_answer loses its first argument and seamless_batch its `code` column: both signatures
-- change, so both are dropped here and created anew by sql/functions/ (ledger.sql,
-- seamless.sql), which `wallet migrate` applies after this file.
DROP FUNCTION wallet_answer(text, text, bigint, text, bigint, boolean, text);
DROP FUNCTION seamless_batch(text[], text[], text[], text[], text[], text[], text[], bigint[],
                             text[], bytea[], boolean[], text[], bytea[], integer, integer);

ALTER TYPE wallet_outcome DROP ATTRIBUTE code;
ALTER TABLE seamless_requests DROP COLUMN code;
