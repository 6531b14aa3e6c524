-- Operator adjustments: serialised on their Idempotency-Key, and refused before BIGINT overflows.
--
-- Two requests with one key for different players each locked only their own player's row, so
-- both found the key unused and both inserted ('#adjustment', key): one of them died on the
-- unique key with a 500. A transaction-level advisory lock on the key, taken before anything is
-- read, makes the second wait for the first and then find its posting: the same answer again
-- (same player and body) or idempotency_conflict. The key lock comes before the player's row
-- lock, and no other function takes it, so the two locks are always taken in one order.
--
-- A credit that would take the balance past 2^63-1 raised numeric_value_out_of_range (a 500)
-- from the very balance check; it is now R3 invalid_field, naming the largest balance.
CREATE OR REPLACE FUNCTION wallet_adjust(
    p_key text, p_player text, p_amount bigint, p_reason text, p_actor text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
    t record;
    v_tx bigint;
    v_max CONSTANT bigint := 9223372036854775807;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('#adjustment|' || p_key, 0));
    acc := wallet_lock_player(p_player);
    IF acc.account_id IS NULL THEN
        RETURN wallet_answer('R3', 'player_not_found', NULL, NULL);
    END IF;
    SELECT id, player_id, amount, metadata ->> 'reason' AS reason INTO t
      FROM ledger_transactions WHERE source = '#adjustment' AND external_id = p_key;
    IF FOUND THEN
        IF t.player_id = p_player AND t.amount = p_amount AND t.reason = p_reason THEN
            RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency, t.id, true);
        END IF;
        RETURN wallet_answer('R3', 'idempotency_conflict', acc.balance, acc.currency);
    END IF;
    -- Written so that the check itself cannot overflow: balance >= 0 and amount > 0 here.
    IF p_amount > 0 AND acc.balance > v_max - p_amount THEN
        RETURN wallet_answer('R3', 'invalid_field', acc.balance, acc.currency, NULL, false,
            format('a credit of %s would take the balance of %s past the largest balance, %s',
                   p_amount, acc.balance, v_max));
    END IF;
    IF acc.balance + p_amount < 0 THEN
        RETURN wallet_answer('R4', 'insufficient_funds', acc.balance, acc.currency);
    END IF;
    v_tx := wallet_post('#adjustment', p_key, 'adjustment', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, NULL, NULL, NULL, NULL,
                        'house', 'adjustments',
                        jsonb_build_object('reason', p_reason, 'actor', p_actor));
    RETURN wallet_answer('R0', 'ok', acc.balance + p_amount, acc.currency, v_tx);
END
$$;
