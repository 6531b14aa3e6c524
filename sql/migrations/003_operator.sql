-- Operator API: stored API keys with roles, the audit log, and setting limits with cooling-off.

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
