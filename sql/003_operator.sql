-- Operator API: stored API keys with roles, the audit log, and cooling-off for limit increases.

-- Only the SHA-256 of a key is kept. Keys are 32 random bytes, so a plain hash is enough: there is
-- nothing to guess that a slow hash would protect.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'support', 'finance')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Every administrative action, with who did it and the state before and after. Append-only.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    before      jsonb,
    after       jsonb,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_time ON audit_log (created_at, id);
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- A limit that is raised or removed changes only after a cooling-off period; a limit that is
-- lowered or newly set changes at once. The pending change sits beside the limit in force:
-- next_from NOT NULL means a change is pending, and next_amount NULL then means removal.
ALTER TABLE player_limits
    ADD COLUMN next_amount bigint CHECK (next_amount >= 0),
    ADD COLUMN next_from timestamptz,
    ADD CONSTRAINT player_limits_next_amount_needs_time
        CHECK (next_amount IS NULL OR next_from IS NOT NULL);

-- The amount in force now for one limit row; NULL when a pending removal has taken effect.
CREATE FUNCTION wallet_limit_in_force(p_amount bigint, p_next_amount bigint, p_next_from timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_next_from IS NOT NULL AND p_next_from <= now()
                THEN p_next_amount ELSE p_amount END
$$;

-- Set (p_amount) or remove (NULL) one limit; answers the row as it then stands.
CREATE FUNCTION wallet_set_limit(
    p_player text, p_kind text, p_period text, p_amount bigint, p_cooling_off interval
) RETURNS TABLE (amount bigint, next_amount bigint, next_from timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
    v_in_force bigint;
BEGIN
    SELECT l.amount, l.next_amount, l.next_from INTO cur FROM player_limits l
     WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period
       FOR UPDATE;
    IF NOT FOUND THEN
        IF p_amount IS NOT NULL THEN  -- a new limit only restricts: at once
            INSERT INTO player_limits (player_id, kind, period, amount)
            VALUES (p_player, p_kind, p_period, p_amount);
        END IF;
        RETURN QUERY SELECT p_amount, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    v_in_force := wallet_limit_in_force(cur.amount, cur.next_amount, cur.next_from);
    IF v_in_force IS NULL THEN
        -- A pending removal already took effect: the row no longer limits anything.
        DELETE FROM player_limits l
         WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
        RETURN QUERY SELECT * FROM wallet_set_limit(p_player, p_kind, p_period, p_amount,
                                                     p_cooling_off);
        RETURN;
    END IF;
    IF p_amount IS NOT NULL AND p_amount <= v_in_force THEN
        -- Lowering (or confirming) applies at once and drops any pending raise.
        UPDATE player_limits l SET amount = p_amount, next_amount = NULL, next_from = NULL,
               updated_at = now()
         WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
        RETURN QUERY SELECT p_amount, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    -- Raising or removing waits; asking again restarts the wait.
    UPDATE player_limits l SET amount = v_in_force, next_amount = p_amount,
           next_from = now() + p_cooling_off, updated_at = now()
     WHERE l.player_id = p_player AND l.kind = p_kind AND l.period = p_period;
    RETURN QUERY SELECT v_in_force, p_amount, now() + p_cooling_off;
END
$$;

-- Enforcement reads the limit in force, so a raise or removal takes effect on time by itself.
CREATE OR REPLACE FUNCTION wallet_limit_exceeded(p_player text, p_amount bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    lim record;
    v_start timestamptz;
    v_used bigint;
    v_won bigint;
BEGIN
    FOR lim IN SELECT kind, period,
                      wallet_limit_in_force(amount, next_amount, next_from) AS amount
                 FROM player_limits
                WHERE player_id = p_player AND kind IN ('wager', 'loss') LOOP
        CONTINUE WHEN lim.amount IS NULL;
        v_start := wallet_window_start(lim.period);
        SELECT coalesce(sum(b.amount), 0) INTO v_used FROM ledger_transactions b
         WHERE b.player_id = p_player AND b.kind = 'bet' AND b.created_at >= v_start
           AND NOT EXISTS (SELECT 1 FROM ledger_transactions c
                            WHERE c.source = b.source AND c.kind = 'cancel'
                              AND c.ref_external_id = b.external_id);
        IF lim.kind = 'loss' THEN
            SELECT coalesce(sum(delta), 0) INTO v_won FROM ledger_transactions
             WHERE player_id = p_player AND kind IN ('result', 'result_change')
               AND created_at >= v_start;
            v_used := v_used - v_won;
        END IF;
        IF greatest(v_used, 0) + p_amount > lim.amount THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

-- The failures list is the calls answered R1 to R3 (R4 is a player's balance, not a fault).
DROP INDEX seamless_calls_failures;
CREATE INDEX seamless_calls_failures ON seamless_calls (id) WHERE code IN ('R1', 'R2', 'R3');
CREATE INDEX seamless_calls_by_provider ON seamless_calls (provider, id);

-- Postings are stamped when written, after the player's row lock was granted, not when their
-- transaction began: then one player's postings are in the same order by time as by balance, and
-- statements and history pages never show a balance_after out of sequence.
CREATE OR REPLACE FUNCTION wallet_post(
    p_source text, p_external_id text, p_kind text, p_player text, p_account bigint,
    p_balance bigint, p_currency text, p_amount bigint, p_delta bigint,
    p_round text, p_game text, p_ref text, p_request_id text,
    p_counter_kind text, p_counter_owner text, p_metadata jsonb DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_tx bigint;
BEGIN
    IF p_delta <> 0 THEN
        -- CHECK (balance >= 0) is the last guard should a caller's own check be wrong.
        UPDATE accounts SET balance = balance + p_delta WHERE id = p_account;
    END IF;
    INSERT INTO ledger_transactions (
        source, external_id, kind, player_id, currency, amount, delta, balance_after,
        round_id, game_id, ref_external_id, request_id, metadata, created_at)
    VALUES (
        p_source, p_external_id, p_kind, p_player, p_currency, p_amount, p_delta,
        p_balance + p_delta, p_round, p_game, p_ref, p_request_id, p_metadata, clock_timestamp())
    RETURNING id INTO v_tx;
    IF p_delta <> 0 THEN
        INSERT INTO entries (transaction_id, account_id, amount) VALUES
            (v_tx, p_account, p_delta),
            (v_tx, wallet_clearing_account(p_counter_kind, p_counter_owner, p_currency), -p_delta);
    END IF;
    RETURN v_tx;
END
$$;
