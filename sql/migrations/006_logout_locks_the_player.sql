-- A logout racing a bet on the same session must fit one order or the other. The bet checks the
-- session under the player's account row lock; logout read the balance without that lock, so it
-- could end the session after the bet had used it and still answer the balance from before the
-- bet, which no order of the two explains (found by tests/test_model_based.py). Logout now takes
-- the same row lock first, like every money event, so the two serialise.
CREATE OR REPLACE FUNCTION seamless_logout(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_lock_player(p_player);
    s record;
BEGIN
    IF acc.account_id IS NULL THEN
        RETURN wallet_answer('R3', 'player_not_found', NULL, NULL);
    END IF;
    SELECT player_id, provider INTO s FROM sessions WHERE token_hash = p_token_hash;
    IF NOT FOUND OR s.player_id <> p_player OR s.provider <> p_provider THEN
        RETURN wallet_answer('R2', 'invalid_session', acc.balance, acc.currency);
    END IF;
    UPDATE sessions SET ended_at = now()
     WHERE token_hash = p_token_hash AND ended_at IS NULL AND expires_at > now();
    RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency);
END
$$;
