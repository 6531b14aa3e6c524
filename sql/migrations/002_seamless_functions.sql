-- The seamless hot path: one function per event, so that one event is one round trip.
--
-- Every money function starts by locking the player's account row. That row lock, not the Redis
-- lock, is what serialises a player's money events: a bet racing its cancel, or two deliveries of
-- one transaction, run one after the other here even if the Redis lock was lost. The functions are
-- VOLATILE, so under READ COMMITTED each statement after the lock sees everything committed
-- before the lock was granted.
--
-- A unique violation can still happen when two *different* players send the same provider
-- transaction id at once (they lock different rows). The caller retries the call once; the retry
-- then sees the committed row and answers duplicate or idempotency_conflict.

CREATE TYPE wallet_outcome AS (
    code                   text,    -- R0..R4
    reason                 text,
    detail                 text,    -- for people; NULL when the reason says it all
    balance                bigint,  -- NULL when the player does not exist
    currency               text,
    wallet_transaction_id  bigint,
    duplicate              boolean
);

CREATE FUNCTION wallet_answer(
    p_code text, p_reason text, p_balance bigint, p_currency text,
    p_tx bigint DEFAULT NULL, p_duplicate boolean DEFAULT false, p_detail text DEFAULT NULL
) RETURNS wallet_outcome LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_code, p_reason, p_detail, p_balance, p_currency, p_tx, p_duplicate)::wallet_outcome
$$;

-- The clearing account of a provider (or a house purpose) in one currency, created on first use.
CREATE FUNCTION wallet_clearing_account(p_kind text, p_owner text, p_currency text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM accounts
     WHERE kind = p_kind AND owner = p_owner AND currency = p_currency;
    IF FOUND THEN
        RETURN v_id;
    END IF;
    INSERT INTO accounts (kind, owner, currency) VALUES (p_kind, p_owner, p_currency)
        ON CONFLICT (kind, owner, currency) DO NOTHING
        RETURNING id INTO v_id;
    IF v_id IS NULL THEN  -- created concurrently by another player's first posting
        SELECT id INTO v_id FROM accounts
         WHERE kind = p_kind AND owner = p_owner AND currency = p_currency;
    END IF;
    RETURN v_id;
END
$$;

-- Posts one ledger transaction: the player's balance moves by p_delta and the counter account by
-- -p_delta, so every posting sums to zero. A zero delta (a lost round, a cancel tombstone) is
-- recorded without entries. The caller holds the player's account row lock, and the posting is
-- stamped when written (clock_timestamp, after that lock), not when its transaction began: then
-- one player's postings are in the same order by time as by balance, and statements and history
-- pages never show a balance_after out of sequence.
CREATE FUNCTION wallet_post(
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

-- The player and their wallet account; NULL fields when the player does not exist.
CREATE TYPE wallet_player AS (account_id bigint, balance bigint, currency text, status text);

CREATE FUNCTION wallet_player_of(p_player text) RETURNS wallet_player LANGUAGE sql STABLE AS $$
    SELECT ROW(a.id, a.balance, p.currency, p.status)::wallet_player
      FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = p_player
$$;

-- The same, holding the account row lock until the transaction ends: the serialisation point of
-- all of one player's money events.
CREATE FUNCTION wallet_lock_player(p_player text) RETURNS wallet_player LANGUAGE sql AS $$
    SELECT ROW(a.id, a.balance, p.currency, p.status)::wallet_player
      FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = p_player
       FOR UPDATE OF a
$$;

-- A bet and a cancel naming the same provider transaction id may come under different players,
-- whose row locks do not meet. This lock makes them meet, so a cancel never records "never
-- posted" for a bet that another transaction is posting at that moment.
CREATE FUNCTION seamless_lock_transaction_id(p_provider text, p_txn text)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(p_provider || '|' || p_txn, 0))
$$;

-- Idempotency by (provider, transaction_id): NULL when the id is new; R0 duplicate when the
-- earlier posting carried the same fields; R3 idempotency_conflict otherwise.
CREATE FUNCTION seamless_repeat(
    p_source text, p_txn text, p_kind text, p_player text, p_round text,
    p_amount bigint, p_currency text, p_ref text, p_balance bigint, p_player_currency text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT id, kind, player_id, round_id, amount, currency, ref_external_id INTO t
      FROM ledger_transactions WHERE source = p_source AND external_id = p_txn;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.kind = p_kind AND t.player_id = p_player AND t.round_id IS NOT DISTINCT FROM p_round
       AND t.amount IS NOT DISTINCT FROM p_amount AND t.currency = p_currency
       AND t.ref_external_id IS NOT DISTINCT FROM p_ref THEN
        RETURN wallet_answer('R0', 'ok', p_balance, p_player_currency, t.id, true);
    END IF;
    RETURN wallet_answer('R3', 'idempotency_conflict', p_balance, p_player_currency, NULL, false,
        format('transaction_id %s was already used for a %s with different fields', p_txn, t.kind));
END
$$;

-- What every money event starts with: lock the player's account, then settle an unknown player,
-- an idempotent repeat (or conflict) and a currency mismatch. `stop` is the answer when the event
-- ends here, NULL fields otherwise.
CREATE FUNCTION seamless_open(
    p_provider text, p_player text, p_txn text, p_kind text, p_round text,
    p_amount bigint, p_currency text, p_ref text,
    OUT acc wallet_player, OUT stop wallet_outcome
) LANGUAGE plpgsql AS $$
BEGIN
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

-- NULL when the token is a live session of this player at this provider, else the R2 reason.
CREATE FUNCTION seamless_session_problem(p_token_hash bytea, p_player text, p_provider text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    SELECT player_id, provider, expires_at, ended_at INTO s
      FROM sessions WHERE token_hash = p_token_hash;
    IF NOT FOUND OR s.player_id <> p_player OR s.provider <> p_provider
       OR s.ended_at IS NOT NULL THEN
        RETURN 'invalid_session';
    END IF;
    IF s.expires_at <= now() THEN
        RETURN 'session_expired';
    END IF;
    RETURN NULL;
END
$$;

-- Start of the current calendar window in UTC (weeks start on Monday).
CREATE FUNCTION wallet_window_start(p_period text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT date_trunc(
        CASE p_period WHEN 'daily' THEN 'day' WHEN 'weekly' THEN 'week' ELSE 'month' END,
        now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The amount in force now for one limit row; NULL when a pending removal has taken effect.
CREATE FUNCTION wallet_limit_in_force(p_amount bigint, p_next_amount bigint, p_next_from timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_next_from IS NOT NULL AND p_next_from <= now()
                THEN p_next_amount ELSE p_amount END
$$;

-- Would a bet of p_amount break one of the player's wager or loss limits? Wagered: bets placed in
-- the window and not refunded. Loss: wagered less what results and corrections paid in the
-- window. The new bet counts in full towards both, as it may be lost.
CREATE FUNCTION wallet_limit_exceeded(p_player text, p_amount bigint)
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

CREATE FUNCTION seamless_bet(
    p_provider text, p_player text, p_txn text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_token_hash bytea, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    v_problem text;
    v_closed timestamptz;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'bet', p_round,
                                            p_amount, p_currency, NULL);
    acc := opened.acc;
    o := opened.stop;
    PERFORM seamless_lock_transaction_id(p_provider, p_txn);
    IF EXISTS (SELECT 1 FROM ledger_transactions
                WHERE source = p_provider AND kind = 'cancel' AND ref_external_id = p_txn) THEN
        -- Cancelled before it arrived, or posted and since refunded: either way not a live bet.
        IF o.code IS NULL OR o.code = 'R0' THEN
            RETURN wallet_answer('R1', 'transaction_cancelled', acc.balance, acc.currency);
        END IF;
    END IF;
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;
    v_problem := seamless_session_problem(p_token_hash, p_player, p_provider);
    IF v_problem IS NOT NULL THEN
        RETURN wallet_answer('R2', v_problem, acc.balance, acc.currency);
    END IF;
    IF acc.status <> 'active' THEN
        RETURN wallet_answer('R1', 'player_blocked', acc.balance, acc.currency);
    END IF;
    SELECT closed_at INTO v_closed FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF v_closed IS NOT NULL THEN
        RETURN wallet_answer('R1', 'round_closed', acc.balance, acc.currency);
    END IF;
    IF wallet_limit_exceeded(p_player, p_amount) THEN
        RETURN wallet_answer('R1', 'limit_exceeded', acc.balance, acc.currency);
    END IF;
    IF acc.balance < p_amount THEN
        RETURN wallet_answer('R4', 'insufficient_funds', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'bet', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, -p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider);
    INSERT INTO rounds (provider, player_id, round_id, game_id, bets)
         VALUES (p_provider, p_player, p_round, p_game, 1)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE SET bets = rounds.bets + 1;
    RETURN wallet_answer('R0', 'ok', acc.balance - p_amount, acc.currency, v_tx);
END
$$;

CREATE FUNCTION seamless_cancel(
    p_provider text, p_player text, p_txn text, p_ref text, p_round text,
    p_amount bigint, p_currency text, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    bet record;
    prior record;
    v_results integer;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'cancel', p_round,
                                            p_amount, p_currency, p_ref);
    acc := opened.acc;
    o := opened.stop;
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;
    PERFORM seamless_lock_transaction_id(p_provider, p_ref);
    SELECT id, player_id INTO prior FROM ledger_transactions
     WHERE source = p_provider AND kind = 'cancel' AND ref_external_id = p_ref;

    SELECT kind, player_id, round_id, amount INTO bet FROM ledger_transactions
     WHERE source = p_provider AND external_id = p_ref;
    IF NOT FOUND THEN
        IF prior.id IS NOT NULL THEN
            IF prior.player_id <> p_player THEN
                RETURN wallet_answer('R1', 'transaction_not_found', acc.balance, acc.currency,
                    NULL, false, 'ref_transaction_id was cancelled for another player');
            END IF;
            RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency, prior.id, true);
        END IF;
        -- Never posted: remember the cancel, so that a late bet with this id is refused and a
        -- result for a round with no other bet is refused as cancelled.
        v_tx := wallet_post(p_provider, p_txn, 'cancel', p_player, acc.account_id, acc.balance,
                            acc.currency, p_amount, 0, p_round, NULL, p_ref, p_request_id,
                            'provider', p_provider);
        INSERT INTO rounds (provider, player_id, round_id, bets, cancelled_bets)
             VALUES (p_provider, p_player, p_round, 1, 1)
        ON CONFLICT (provider, player_id, round_id) DO UPDATE
            SET bets = rounds.bets + 1, cancelled_bets = rounds.cancelled_bets + 1;
        RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency, v_tx);
    END IF;
    IF bet.kind <> 'bet' OR bet.player_id <> p_player OR bet.round_id <> p_round THEN
        RETURN wallet_answer('R1', 'transaction_not_found', acc.balance, acc.currency, NULL, false,
            'ref_transaction_id is not a bet of this player and round');
    END IF;
    IF p_amount IS NOT NULL AND p_amount <> bet.amount THEN
        RETURN wallet_answer('R3', 'invalid_field', acc.balance, acc.currency, NULL, false,
            format('amount must equal the bet''s amount (%s)', bet.amount));
    END IF;
    IF prior.id IS NOT NULL THEN
        RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency, prior.id, true);
    END IF;
    SELECT results INTO v_results FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF v_results > 0 THEN
        RETURN wallet_answer('R1', 'bet_already_settled', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'cancel', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, bet.amount, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider);
    UPDATE rounds SET cancelled_bets = cancelled_bets + 1
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    RETURN wallet_answer('R0', 'ok', acc.balance + bet.amount, acc.currency, v_tx);
END
$$;

CREATE FUNCTION seamless_result(
    p_provider text, p_player text, p_txn text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_round_closed boolean, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    r record;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'result', p_round,
                                            p_amount, p_currency, NULL);
    acc := opened.acc;
    o := opened.stop;
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;
    SELECT bets, cancelled_bets, closed_at INTO r FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF FOUND AND r.closed_at IS NOT NULL THEN
        RETURN wallet_answer('R1', 'round_closed', acc.balance, acc.currency);
    END IF;
    IF FOUND AND r.bets > 0 AND r.bets = r.cancelled_bets THEN
        RETURN wallet_answer('R1', 'round_cancelled', acc.balance, acc.currency);
    END IF;

    -- Wins land whatever the player's status or session: the stake was taken when it was allowed.
    v_tx := wallet_post(p_provider, p_txn, 'result', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider);
    INSERT INTO rounds (provider, player_id, round_id, game_id, results, closed_at)
         VALUES (p_provider, p_player, p_round, p_game, 1,
                 CASE WHEN p_round_closed THEN now() END)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE
        SET results = rounds.results + 1,
            closed_at = CASE WHEN p_round_closed THEN now() END;
    RETURN wallet_answer('R0', 'ok', acc.balance + p_amount, acc.currency, v_tx);
END
$$;

CREATE FUNCTION seamless_result_change(
    p_provider text, p_player text, p_txn text, p_ref text, p_round text,
    p_amount bigint, p_currency text, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    res record;
    v_current bigint;
    v_diff bigint;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'result_change',
                                            p_round, p_amount, p_currency, p_ref);
    acc := opened.acc;
    o := opened.stop;
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;
    SELECT kind, player_id, round_id, amount INTO res FROM ledger_transactions
     WHERE source = p_provider AND external_id = p_ref;
    IF NOT FOUND OR res.kind <> 'result' OR res.player_id <> p_player
       OR res.round_id <> p_round THEN
        RETURN wallet_answer('R1', 'transaction_not_found', acc.balance, acc.currency, NULL, false,
            'ref_transaction_id is not a result of this player and round');
    END IF;
    -- The result's current total is the latest correction, or the result itself.
    SELECT amount INTO v_current FROM ledger_transactions
     WHERE source = p_provider AND kind = 'result_change' AND ref_external_id = p_ref
     ORDER BY id DESC LIMIT 1;
    v_diff := p_amount - coalesce(v_current, res.amount);
    IF acc.balance + v_diff < 0 THEN
        RETURN wallet_answer('R4', 'insufficient_funds', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'result_change', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, v_diff, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider);
    RETURN wallet_answer('R0', 'ok', acc.balance + v_diff, acc.currency, v_tx);
END
$$;

-- login: a live session of this player; an unknown player is an invalid session.
CREATE FUNCTION seamless_login(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_player_of(p_player);
    v_problem text;
BEGIN
    IF acc.account_id IS NULL THEN
        RETURN wallet_answer('R2', 'invalid_session', NULL, NULL);
    END IF;
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

CREATE FUNCTION seamless_balance(p_player text)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_player_of(p_player);
BEGIN
    IF acc.account_id IS NULL THEN
        RETURN wallet_answer('R3', 'player_not_found', NULL, NULL);
    END IF;
    RETURN wallet_answer('R0', 'ok', acc.balance, acc.currency);
END
$$;

-- logout: ends a session of this player at this provider; ending an ended session is fine.
CREATE FUNCTION seamless_logout(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_player_of(p_player);
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

-- A signed operator adjustment, idempotent by its Idempotency-Key. Reasons: ok (duplicate flag
-- on a repeat), idempotency_conflict, player_not_found, insufficient_funds.
CREATE FUNCTION wallet_adjust(
    p_key text, p_player text, p_amount bigint, p_reason text, p_actor text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_lock_player(p_player);
    t record;
    v_tx bigint;
BEGIN
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
