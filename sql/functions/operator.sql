-- Operator functions: limits and adjustments, the money actions of the operator API.
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- Set (p_amount) or remove (NULL) one limit; answers the row as it then stands. A new or lower
-- limit applies at once, a raise or a removal after p_cooling_off.
-- It takes the player's account row lock first. Two first settings of one limit at once then run
-- one after the other (else they both inserted the row, and one failed), and no posting can fall
-- between counting the totals from the ledger and the postings that keep them.
CREATE OR REPLACE FUNCTION wallet_set_limit(
    p_player text, p_kind text, p_period text, p_amount bigint, p_cooling_off interval
) RETURNS TABLE (amount bigint, next_amount bigint, next_from timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
    v_kept boolean;
    v_in_force bigint;
    v_amount bigint := p_amount;
    v_next_amount bigint;
    v_next_from timestamptz;
BEGIN
    PERFORM wallet_lock_player(p_player);
    v_kept := wallet_limit_totals_kept(p_player);
    SELECT l.amount, l.next_amount, l.next_from INTO cur FROM player_limits l
     WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period
       FOR UPDATE;
    IF FOUND THEN
        v_in_force := wallet_limit_in_force(cur.amount, cur.next_amount, cur.next_from);
        IF v_in_force IS NULL THEN
            -- A pending removal already took effect: the row no longer limits anything.
            DELETE FROM player_limits l
             WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
        END IF;
    END IF;
    IF v_in_force IS NULL THEN
        IF p_amount IS NOT NULL THEN  -- a new limit only restricts: at once
            INSERT INTO player_limits (player_id, kind, period, amount)
            VALUES (p_player, p_kind, p_period, p_amount);
        END IF;
    ELSIF p_amount IS NOT NULL AND p_amount <= v_in_force THEN
        -- Lowering (or confirming) applies at once and drops any pending raise.
        UPDATE player_limits l SET amount = p_amount, next_amount = NULL, next_from = NULL,
               updated_at = now()
         WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
    ELSE
        -- Raising or removing waits; asking again restarts the wait.
        v_amount := v_in_force;
        v_next_amount := p_amount;
        v_next_from := now() + p_cooling_off;
        UPDATE player_limits l SET amount = v_in_force, next_amount = p_amount,
               next_from = v_next_from, updated_at = now()
         WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
    END IF;
    IF p_kind = ANY (wallet_play_limit_kinds())
       AND wallet_limit_totals_kept(p_player) IS DISTINCT FROM v_kept THEN
        IF v_kept THEN
            -- The last wager or loss limit is gone: stop keeping totals. Should one be set
            -- again, they are counted afresh then.
            DELETE FROM player_limit_totals WHERE player_id = p_player;
        ELSE
            PERFORM wallet_limit_totals_recount(p_player);
        END IF;
    END IF;
    RETURN QUERY SELECT v_amount, v_next_amount, v_next_from;
END
$$;

-- A signed operator adjustment, idempotent by its Idempotency-Key. Reasons: ok (duplicate flag
-- on a repeat), idempotency_conflict, player_not_found, insufficient_funds, invalid_field.
--
-- Serialised on the key: two requests with one key for different players would each lock only
-- their own player's row, both find the key unused and both insert ('#adjustment', key), one of
-- them dying on the unique key with a 500. A transaction-level advisory lock on the key, taken
-- before anything is read, makes the second wait for the first and then find its posting: the
-- same answer again (same player and body) or idempotency_conflict. The key lock comes before
-- the player's row lock, and no other function takes it, so the two locks are always taken in
-- one order.
--
-- A credit that would take the balance past 2^63-1 is R3 invalid_field, naming the largest
-- balance, before the balance check could raise numeric_value_out_of_range.
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
        RETURN wallet_answer('player_not_found', NULL, NULL);
    END IF;
    SELECT id, player_id, amount, metadata ->> 'reason' AS reason INTO t
      FROM ledger_transactions WHERE source = '#adjustment' AND external_id = p_key;
    IF FOUND THEN
        IF t.player_id = p_player AND t.amount = p_amount AND t.reason = p_reason THEN
            RETURN wallet_answer('ok', acc.balance, acc.currency, t.id, true);
        END IF;
        RETURN wallet_answer('idempotency_conflict', acc.balance, acc.currency);
    END IF;
    -- Written so that the check itself cannot overflow: balance >= 0 and amount > 0 here.
    IF p_amount > 0 AND acc.balance > v_max - p_amount THEN
        RETURN wallet_answer('invalid_field', acc.balance, acc.currency, NULL, false,
            format('a credit of %s would take the balance of %s past the largest balance, %s',
                   p_amount, acc.balance, v_max));
    END IF;
    IF acc.balance + p_amount < 0 THEN
        RETURN wallet_answer('insufficient_funds', acc.balance, acc.currency);
    END IF;
    v_tx := wallet_post('#adjustment', p_key, 'adjustment', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, NULL, NULL, NULL, NULL,
                        'house', 'adjustments',
                        jsonb_build_object('reason', p_reason, 'actor', p_actor));
    RETURN wallet_answer('ok', acc.balance + p_amount, acc.currency, v_tx);
END
$$;
