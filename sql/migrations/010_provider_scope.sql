-- Provider scope (contract 1 [1.1]): a provider sees and moves money only for players who have had
-- at least one session issued for that provider, ever, ended or expired. Any other player is
-- answered exactly as an unknown one (R3 player_not_found; R2 invalid_session for login), so one
-- provider's key can neither read nor credit the players of another.
--
-- The check is on the hot path, once per event, so it is one primary-key probe of its own table
-- rather than a search of the sessions. A row is never deleted: a win or a refund must land long
-- after the session that allowed the bet has ended.

CREATE TABLE provider_players (
    provider    text NOT NULL REFERENCES providers (code),
    player_id   text NOT NULL REFERENCES players (player_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, player_id)
);

-- Filled by the statement that inserts the sessions, whoever writes them (the operator API, the
-- benchmark's set-based seeding): no session can exist without its player being in scope. One
-- set-based insert per statement, so seeding a million sessions costs one more statement, not a
-- million. Two sessions issued at once for one pair meet on the primary key; the second does
-- nothing.
CREATE FUNCTION provider_players_from_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO provider_players (provider, player_id)
    SELECT DISTINCT provider, player_id FROM new_sessions
    ON CONFLICT (provider, player_id) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_bring_players_into_scope AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS new_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION provider_players_from_sessions();

-- Every session issued before this migration counts, from the first one.
INSERT INTO provider_players (provider, player_id, created_at)
SELECT provider, player_id, min(created_at) FROM sessions GROUP BY provider, player_id
ON CONFLICT (provider, player_id) DO NOTHING;

-- Whether the provider may see the player. A player out of scope and a player who does not
-- exist are the same to the caller; a row here implies the player exists (foreign key).
CREATE FUNCTION seamless_in_scope(p_provider text, p_player text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM provider_players
                    WHERE provider = p_provider AND player_id = p_player)
$$;

-- Every money event starts here, so every money event is scoped here. The scope is checked
-- before the lock: a provider must not hold up, by its row lock, a player it may not see. Rows
-- are only ever added, so what the check saw still holds under the lock.
CREATE OR REPLACE FUNCTION seamless_open(
    p_provider text, p_player text, p_txn text, p_kind text, p_round text,
    p_amount bigint, p_currency text, p_ref text,
    OUT acc wallet_player, OUT stop wallet_outcome
) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        stop := wallet_answer('R3', 'player_not_found', NULL, NULL);
        RETURN;
    END IF;
    acc := wallet_lock_player(p_player);
    IF acc.account_id IS NULL THEN
        stop := wallet_answer('R3', 'player_not_found', NULL, NULL);
        RETURN;
    END IF;
    stop := seamless_repeat(p_provider, p_txn, p_kind, p_player, p_round, p_amount, p_currency,
                            p_ref, acc.balance, acc.currency);
    IF stop.code IS NULL AND p_currency <> acc.currency THEN
        stop := wallet_answer('R3', 'currency_mismatch', acc.balance, acc.currency);
    END IF;
END
$$;

-- login: a live session of this player; an unknown player, or one out of scope, is an invalid
-- session with nothing about the player.
CREATE OR REPLACE FUNCTION seamless_login(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
    v_problem text;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('R2', 'invalid_session', NULL, NULL);
    END IF;
    acc := wallet_player_of(p_player);
    v_problem := seamless_session_problem(p_token_hash, p_player, p_provider);
    IF v_problem IS NOT NULL THEN
        RETURN wallet_answer('R2', v_problem, acc.balance, acc.currency);
    END IF;
    IF acc.status <> 'active' THEN
        RETURN wallet_answer('R1', 'player_blocked', acc.balance, acc.currency);
    END IF;
    RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency);
END
$$;

-- The balance now needs the provider asking: the signature changes, so the old one goes, and
-- nothing can call an unscoped balance any more.
DROP FUNCTION seamless_balance(text);
CREATE FUNCTION seamless_balance(p_provider text, p_player text)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('R3', 'player_not_found', NULL, NULL);
    END IF;
    acc := wallet_player_of(p_player);
    RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency);
END
$$;

-- logout: as in 006 (the player's row lock first, so a logout and a bet fit one order), after
-- the scope.
CREATE OR REPLACE FUNCTION seamless_logout(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
    s record;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('R3', 'player_not_found', NULL, NULL);
    END IF;
    acc := wallet_lock_player(p_player);
    SELECT player_id, provider INTO s FROM sessions WHERE token_hash = p_token_hash;
    IF NOT FOUND OR s.player_id <> p_player OR s.provider <> p_provider THEN
        RETURN wallet_answer('R2', 'invalid_session', acc.balance, acc.currency);
    END IF;
    UPDATE sessions SET ended_at = now()
     WHERE token_hash = p_token_hash AND ended_at IS NULL AND expires_at > now();
    RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency);
END
$$;
