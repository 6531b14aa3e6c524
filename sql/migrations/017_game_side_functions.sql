-- What the game side's functions need beyond 016's tables.

-- An answer names the kind of credit it posted (win, jackpot, bonus, free_round, promo_win), so
-- the app counts credits by kind in its metrics as the ledger stores them. NULL when nothing was
-- credited.
ALTER TYPE wallet_outcome ADD ATTRIBUTE credit_kind text;

-- Signatures that change (the function files create them anew): postings carry the result's kind
-- and the bet's free-round grant; idempotent repeats compare them too; the batch answers the
-- kind of credit. IF EXISTS: on a database migrating from nothing, the function files have not run
-- yet (the batch over seamless_event[] exists only once sql/functions/seamless.sql ran).
DROP FUNCTION IF EXISTS wallet_post(text, text, text, text, bigint, bigint, text, bigint, bigint, text, text,
                          text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS seamless_open(text, text, text, text, text, bigint, text, text);
DROP FUNCTION IF EXISTS seamless_repeat(text, text, text, text, text, bigint, text, text, bigint, text);
DROP FUNCTION IF EXISTS seamless_batch(seamless_event[], integer, integer);
