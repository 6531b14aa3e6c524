-- Seamless wallet functions: one per provider event (bet, cancel, result, result_change,
-- promo_win, end_round, login, balance, logout), what they share (seamless_open: scope, lock, idempotency), and
-- seamless_batch, which runs a group-commit batch of them in one transaction.
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- The provider's scope (provider_players), filled by a statement-level trigger on sessions
-- (sessions_bring_players_into_scope) in the statement that inserts them, whoever writes them
-- (the operator API, the benchmark's set-based seeding): no session can exist without its player
-- being in scope. One set-based insert per statement, so seeding a million sessions costs one
-- more statement, not a million. Two sessions issued at once for one pair meet on the primary
-- key; the second does nothing.
CREATE OR REPLACE FUNCTION provider_players_from_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO provider_players (provider, player_id)
    SELECT DISTINCT provider, player_id FROM new_sessions
    ON CONFLICT (provider, player_id) DO NOTHING;
    RETURN NULL;
END
$$;

-- Whether the provider may see the player. A player out of scope and a player who does not
-- exist are the same to the caller; a row here implies the player exists (foreign key).
CREATE OR REPLACE FUNCTION seamless_in_scope(p_provider text, p_player text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM provider_players
                    WHERE provider = p_provider AND player_id = p_player)
$$;

-- A bet and a cancel naming the same provider transaction id may come under different players,
-- whose row locks do not meet. This lock makes them meet, so a cancel never records "never
-- posted" for a bet that another transaction is posting at that moment.
CREATE OR REPLACE FUNCTION seamless_lock_transaction_id(p_provider text, p_txn text)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(p_provider || '|' || p_txn, 0))
$$;

-- Idempotency by (provider, transaction_id): NULL when the id is new; R0 duplicate when the
-- earlier posting carried the same fields; R3 idempotency_conflict otherwise. A bet's grant and
-- a result's kind are fields of the event too; a result sent as a plain win was stored as
-- free_round when its round was played with free rounds, and is the same result.
CREATE OR REPLACE FUNCTION seamless_repeat(
    p_source text, p_txn text, p_kind text, p_player text, p_round text,
    p_amount bigint, p_currency text, p_ref text, p_balance bigint, p_player_currency text,
    p_free_round bigint, p_result_kind text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT id, kind, player_id, round_id, amount, currency, ref_external_id, free_round_id,
           result_kind INTO t
      FROM ledger_transactions WHERE source = p_source AND external_id = p_txn;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.kind = p_kind AND t.player_id = p_player AND t.round_id IS NOT DISTINCT FROM p_round
       AND t.amount IS NOT DISTINCT FROM p_amount AND t.currency = p_currency
       AND t.ref_external_id IS NOT DISTINCT FROM p_ref
       AND t.free_round_id IS NOT DISTINCT FROM p_free_round
       AND (p_kind <> 'result' OR coalesce(t.result_kind, 'win') = p_result_kind
            OR (p_result_kind = 'win' AND t.result_kind = 'free_round')) THEN
        RETURN wallet_answer('ok', p_balance, p_player_currency, t.id, true);
    END IF;
    RETURN wallet_answer('idempotency_conflict', p_balance, p_player_currency, NULL, false,
        format('transaction_id %s was already used for a %s with different fields', p_txn, t.kind));
END
$$;

-- What every money event starts with: lock the player's account, then settle an unknown player,
-- an idempotent repeat (or conflict) and a currency mismatch. `stop` is the answer when the event
-- ends here, NULL fields otherwise.
--
-- Every money event starts here, so every money event is scoped here. The scope is checked
-- before the lock: a provider must not hold up, by its row lock, a player it may not see. Rows
-- are only ever added, so what the check saw still holds under the lock.
CREATE OR REPLACE FUNCTION seamless_open(
    p_provider text, p_player text, p_txn text, p_kind text, p_round text,
    p_amount bigint, p_currency text, p_ref text, p_free_round bigint, p_result_kind text,
    OUT acc wallet_player, OUT stop wallet_outcome
) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        stop := wallet_answer('player_not_found', NULL, NULL);
        RETURN;
    END IF;
    acc := wallet_lock_player(p_player);
    IF acc.account_id IS NULL THEN
        stop := wallet_answer('player_not_found', NULL, NULL);
        RETURN;
    END IF;
    stop := seamless_repeat(p_provider, p_txn, p_kind, p_player, p_round, p_amount, p_currency,
                            p_ref, acc.balance, acc.currency, p_free_round, p_result_kind);
    IF stop.reason IS NULL AND p_currency <> acc.currency THEN
        stop := wallet_answer('currency_mismatch', acc.balance, acc.currency);
    END IF;
END
$$;

-- NULL when the token is a live session of this player at this provider, else the R2 reason.
CREATE OR REPLACE FUNCTION seamless_session_problem(p_token_hash bytea, p_player text, p_provider text)
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

-- bet: debit the stake. Refused when a cancel of it came first (transaction_cancelled), on a
-- session that is not live (R2), for a blocked player or a closed round, when it breaks a wager
-- or loss limit (limit_exceeded) and when the stake is more than the balance (R4).
--
-- A bet of a free round (p_free_round, the grant's id as the provider sent it; the app makes
-- sure its amount is 0) debits nothing and takes one round of the grant instead, in one
-- conditional update: two bets for a grant's last round take it once, whichever commits first,
-- and a grant withdrawn meanwhile gives none. No limit counts it: it stakes nothing.
CREATE OR REPLACE FUNCTION seamless_bet(
    p_provider text, p_player text, p_txn text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_token_hash bytea, p_request_id text,
    p_free_round text DEFAULT NULL
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    v_problem text;
    v_closed timestamptz;
    v_kept boolean := false;
    v_grant bigint;
    v_tx bigint;
BEGIN
    -- A grant id is the wallet's own, spelt as it gives them out (digits, no leading zero);
    -- any other value names no grant.
    IF p_free_round IS NOT NULL THEN
        v_grant := CASE WHEN p_free_round ~ '^[1-9][0-9]{0,17}$' THEN p_free_round::bigint
                        ELSE -1 END;
    END IF;
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'bet', p_round,
                                            p_amount, p_currency, NULL, v_grant, NULL);
    acc := opened.acc;
    o := opened.stop;
    PERFORM seamless_lock_transaction_id(p_provider, p_txn);
    IF EXISTS (SELECT 1 FROM ledger_transactions
                WHERE source = p_provider AND kind = 'cancel' AND ref_external_id = p_txn) THEN
        -- Cancelled before it arrived, or posted and since refunded: either way not a live bet.
        IF o.reason IS NULL OR o.reason = 'ok' THEN
            RETURN wallet_answer('transaction_cancelled', acc.balance, acc.currency);
        END IF;
    END IF;
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    v_problem := seamless_session_problem(p_token_hash, p_player, p_provider);
    IF v_problem IS NOT NULL THEN
        RETURN wallet_answer(v_problem, acc.balance, acc.currency);
    END IF;
    IF acc.status <> 'active' THEN
        RETURN wallet_answer('player_blocked', acc.balance, acc.currency);
    END IF;
    SELECT closed_at INTO v_closed FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF v_closed IS NOT NULL THEN
        RETURN wallet_answer('round_closed', acc.balance, acc.currency);
    END IF;
    IF v_grant IS NOT NULL THEN
        UPDATE free_rounds SET used = used + 1
         WHERE id = v_grant AND player_id = p_player AND provider = p_provider
           AND game_id = p_game AND withdrawn_at IS NULL AND expires_at > now()
           AND used < rounds;
        IF NOT FOUND THEN
            RETURN wallet_answer('free_round_unavailable', acc.balance, acc.currency);
        END IF;
    ELSE
        v_kept := wallet_limit_totals_kept(p_player);
        IF v_kept AND wallet_limit_exceeded(p_player, p_amount) THEN
            RETURN wallet_answer('limit_exceeded', acc.balance, acc.currency);
        END IF;
        IF acc.balance < p_amount THEN
            RETURN wallet_answer('insufficient_funds', acc.balance, acc.currency);
        END IF;
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'bet', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, -p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider, NULL, NULL, v_grant);
    IF v_kept THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    INSERT INTO rounds AS rnd (provider, player_id, round_id, game_id, bets, free_round_bets,
                             first_transaction)
         VALUES (p_provider, p_player, p_round, p_game, 1, (v_grant IS NOT NULL)::integer, v_tx)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE
        SET bets = rnd.bets + 1,
            free_round_bets = rnd.free_round_bets + EXCLUDED.free_round_bets;
    RETURN wallet_answer('ok', acc.balance - p_amount, acc.currency, v_tx);
END
$$;

-- cancel: refund a bet by its transaction id (p_ref), unless its round has results or an
-- operator settled it as lost. A cancel of a bet never posted records a tombstone, so the bet is
-- refused should it arrive later. A bet of a free round is refunded nothing and gets its round
-- back (the grant's count goes down, even past its expiry: it then simply has none left to use).
CREATE OR REPLACE FUNCTION seamless_cancel(
    p_provider text, p_player text, p_txn text, p_ref text, p_round text,
    p_amount bigint, p_currency text, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    bet record;
    prior record;
    r record;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'cancel', p_round,
                                            p_amount, p_currency, p_ref, NULL, NULL);
    acc := opened.acc;
    o := opened.stop;
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    PERFORM seamless_lock_transaction_id(p_provider, p_ref);
    SELECT id, player_id INTO prior FROM ledger_transactions
     WHERE source = p_provider AND kind = 'cancel' AND ref_external_id = p_ref;

    SELECT kind, player_id, round_id, amount, free_round_id INTO bet FROM ledger_transactions
     WHERE source = p_provider AND external_id = p_ref;
    IF NOT FOUND THEN
        IF prior.id IS NOT NULL THEN
            IF prior.player_id <> p_player THEN
                RETURN wallet_answer('transaction_not_found', acc.balance, acc.currency,
                    NULL, false, 'ref_transaction_id was cancelled for another player');
            END IF;
            RETURN wallet_answer('ok', acc.balance, acc.currency, prior.id, true);
        END IF;
        -- Never posted: remember the cancel, so that a late bet with this id is refused and a
        -- result for a round with no other bet is refused as cancelled. It refunds nothing, so
        -- no limit total changes.
        v_tx := wallet_post(p_provider, p_txn, 'cancel', p_player, acc.account_id, acc.balance,
                            acc.currency, p_amount, 0, p_round, NULL, p_ref, p_request_id,
                            'provider', p_provider);
        INSERT INTO rounds AS rnd (provider, player_id, round_id, bets, cancelled_bets,
                                 first_transaction)
             VALUES (p_provider, p_player, p_round, 1, 1, v_tx)
        ON CONFLICT (provider, player_id, round_id) DO UPDATE
            SET bets = rnd.bets + 1, cancelled_bets = rnd.cancelled_bets + 1;
        RETURN wallet_answer('ok', acc.balance, acc.currency, v_tx);
    END IF;
    IF bet.kind <> 'bet' OR bet.player_id <> p_player OR bet.round_id <> p_round THEN
        RETURN wallet_answer('transaction_not_found', acc.balance, acc.currency, NULL, false,
            'ref_transaction_id is not a bet of this player and round');
    END IF;
    IF p_amount IS NOT NULL AND p_amount <> bet.amount THEN
        RETURN wallet_answer('invalid_field', acc.balance, acc.currency, NULL, false,
            format('amount must equal the bet''s amount (%s)', bet.amount));
    END IF;
    IF prior.id IS NOT NULL THEN
        -- Refunded already: by an earlier cancel, or by an operator's settlement of the round.
        RETURN wallet_answer('ok', acc.balance, acc.currency, prior.id, true);
    END IF;
    SELECT results, settled_action INTO r FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF r.results > 0 OR r.settled_action = 'close' THEN
        RETURN wallet_answer('bet_already_settled', acc.balance, acc.currency);
    END IF;
    o := wallet_credit_overflow(acc.balance, bet.amount, acc.currency);
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'cancel', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, bet.amount, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider);
    IF bet.free_round_id IS NOT NULL THEN
        UPDATE free_rounds SET used = used - 1 WHERE id = bet.free_round_id AND used > 0;
    ELSIF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    UPDATE rounds SET cancelled_bets = cancelled_bets + 1
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    RETURN wallet_answer('ok', acc.balance + bet.amount, acc.currency, v_tx);
END
$$;

-- result: credit a round's win (0 for a lost round), of its kind (win, jackpot, bonus,
-- free_round); refused on a closed or cancelled round. A plain win of a round played with free
-- rounds is credited as free_round.
CREATE OR REPLACE FUNCTION seamless_result(
    p_provider text, p_player text, p_txn text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_round_closed boolean, p_request_id text,
    p_kind text DEFAULT 'win'
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    r record;
    v_kind text := p_kind;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'result', p_round,
                                            p_amount, p_currency, NULL, NULL, p_kind);
    acc := opened.acc;
    o := opened.stop;
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    SELECT bets, cancelled_bets, closed_at, free_round_bets INTO r FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF FOUND AND r.closed_at IS NOT NULL THEN
        RETURN wallet_answer('round_closed', acc.balance, acc.currency);
    END IF;
    IF FOUND AND r.bets > 0 AND r.bets = r.cancelled_bets THEN
        RETURN wallet_answer('round_cancelled', acc.balance, acc.currency);
    END IF;
    o := wallet_credit_overflow(acc.balance, p_amount, acc.currency);
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    IF v_kind = 'win' AND r.free_round_bets > 0 THEN
        v_kind := 'free_round';
    END IF;

    -- Wins land whatever the player's status or session: the stake was taken when it was allowed.
    v_tx := wallet_post(p_provider, p_txn, 'result', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider, NULL, v_kind);
    IF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    INSERT INTO rounds AS rnd (provider, player_id, round_id, game_id, results, closed_at,
                             closed_by, first_transaction)
         VALUES (p_provider, p_player, p_round, p_game, 1,
                 CASE WHEN p_round_closed THEN now() END,
                 CASE WHEN p_round_closed THEN 'result' END, v_tx)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE
        SET results = rnd.results + 1, closed_at = EXCLUDED.closed_at,
            closed_by = EXCLUDED.closed_by;
    o := wallet_answer('ok', acc.balance + p_amount, acc.currency, v_tx);
    o.credit_kind := v_kind;
    RETURN o;
END
$$;

-- result_change: set an earlier result's total to p_amount, posting the difference from its
-- current total (0 when they are equal: the correction is still recorded); a debit may not
-- overdraw. The correction is of the result's kind.
CREATE OR REPLACE FUNCTION seamless_result_change(
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
                                            p_round, p_amount, p_currency, p_ref, NULL, NULL);
    acc := opened.acc;
    o := opened.stop;
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    SELECT kind, player_id, round_id, amount, coalesce(result_kind, 'win') AS result_kind
      INTO res FROM ledger_transactions
     WHERE source = p_provider AND external_id = p_ref;
    IF NOT FOUND OR res.kind <> 'result' OR res.player_id <> p_player
       OR res.round_id <> p_round THEN
        RETURN wallet_answer('transaction_not_found', acc.balance, acc.currency, NULL, false,
            'ref_transaction_id is not a result of this player and round');
    END IF;
    -- The result's current total is the latest correction, or the result itself. Both are
    -- amounts of 0 or more, so their difference fits a bigint.
    SELECT amount INTO v_current FROM ledger_transactions
     WHERE source = p_provider AND kind = 'result_change' AND ref_external_id = p_ref
     ORDER BY id DESC LIMIT 1;
    v_diff := p_amount - coalesce(v_current, res.amount);
    -- First: with a positive difference, the sum below is what would overflow.
    o := wallet_credit_overflow(acc.balance, v_diff, acc.currency);
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    IF acc.balance + v_diff < 0 THEN
        RETURN wallet_answer('insufficient_funds', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'result_change', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, v_diff, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider, NULL, res.result_kind);
    IF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    o := wallet_answer('ok', acc.balance + v_diff, acc.currency, v_tx);
    o.credit_kind := res.result_kind;
    RETURN o;
END
$$;

-- promo_win: a credit outside game rounds (a tournament prize, a cash drop, a campaign payout),
-- whatever the player's status or session. Idempotent by transaction id like every money event;
-- the promotion's id is its reference. It is the provider's money, as wins are, and no play
-- limit counts it: it is not play. A round id, when sent, is only recorded.
CREATE OR REPLACE FUNCTION seamless_promo_win(
    p_provider text, p_player text, p_txn text, p_promo text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    v_tx bigint;
BEGIN
    SELECT * INTO opened FROM seamless_open(p_provider, p_player, p_txn, 'promo_win', p_round,
                                            p_amount, p_currency, p_promo, NULL, NULL);
    acc := opened.acc;
    o := opened.stop;
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    o := wallet_credit_overflow(acc.balance, p_amount, acc.currency);
    IF o.reason IS NOT NULL THEN
        RETURN o;
    END IF;
    v_tx := wallet_post(p_provider, p_txn, 'promo_win', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, p_round, p_game, p_promo, p_request_id,
                        'provider', p_provider);
    o := wallet_answer('ok', acc.balance + p_amount, acc.currency, v_tx);
    o.credit_kind := 'promo_win';
    RETURN o;
END
$$;

-- end_round: closes a round without a result (later bets and results on it are refused as
-- round_closed). A round already closed, or one the wallet never saw, is answered ok with
-- nothing changed. Under the player's lock, like every event that changes a round, so it and a
-- result for the round fit one order or the other. Needs no session.
CREATE OR REPLACE FUNCTION seamless_end_round(
    p_provider text, p_player text, p_round text, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('player_not_found', NULL, NULL);
    END IF;
    acc := wallet_lock_player(p_player);
    UPDATE rounds SET closed_at = now(), closed_by = 'end_round'
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round
       AND closed_at IS NULL;
    IF FOUND THEN
        INSERT INTO round_events (provider, player_id, round_id, event, request_id)
             VALUES (p_provider, p_player, p_round, 'end_round', p_request_id);
    END IF;
    RETURN wallet_answer('ok', acc.balance, acc.currency);
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
        RETURN wallet_answer('invalid_session', NULL, NULL);
    END IF;
    acc := wallet_player_of(p_player);
    v_problem := seamless_session_problem(p_token_hash, p_player, p_provider);
    IF v_problem IS NOT NULL THEN
        RETURN wallet_answer(v_problem, acc.balance, acc.currency);
    END IF;
    IF acc.status <> 'active' THEN
        RETURN wallet_answer('player_blocked', acc.balance, acc.currency);
    END IF;
    RETURN wallet_answer('ok', acc.balance, acc.currency);
END
$$;

-- balance: the player's balance; an unknown player, or one out of scope, is player_not_found.
CREATE OR REPLACE FUNCTION seamless_balance(p_provider text, p_player text)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('player_not_found', NULL, NULL);
    END IF;
    acc := wallet_player_of(p_player);
    RETURN wallet_answer('ok', acc.balance, acc.currency);
END
$$;

-- logout: ends a session of this player at this provider; ending an ended session is fine.
-- A logout racing a bet on the same session must fit one order or the other: the bet checks the
-- session under the player's account row lock, so logout takes the same lock first (after the
-- scope), like every money event, and the two serialise (found by tests/test_model_based.py).
CREATE OR REPLACE FUNCTION seamless_logout(p_provider text, p_player text, p_token_hash bytea)
RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
    s record;
BEGIN
    IF NOT seamless_in_scope(p_provider, p_player) THEN
        RETURN wallet_answer('player_not_found', NULL, NULL);
    END IF;
    acc := wallet_lock_player(p_player);
    SELECT player_id, provider INTO s FROM sessions WHERE token_hash = p_token_hash;
    IF NOT FOUND OR s.player_id <> p_player OR s.provider <> p_provider THEN
        RETURN wallet_answer('invalid_session', acc.balance, acc.currency);
    END IF;
    UPDATE sessions SET ended_at = now()
     WHERE token_hash = p_token_hash AND ended_at IS NULL AND expires_at > now();
    RETURN wallet_answer('ok', acc.balance, acc.currency);
END
$$;

-- Group commit: the events of concurrent requests posted by one call, in one transaction.
--
-- Each event still runs its own function with its own rules, in the order given; what the events
-- share is the round trip and the commit (one WAL flush for the batch instead of one per event).
-- The caller sorts a batch by player id, so two batches take player row locks in the same order
-- and cannot deadlock on them.
--
-- A batch is all or nothing: should any event raise (a unique violation from another player's
-- concurrent use of the same transaction id, a row lock not had within p_lock_timeout_ms), the
-- whole batch rolls back and the caller posts its events again one by one, each a batch of one
-- without a lock timeout. The timeout keeps one player's row, held long by someone else, from
-- holding up every other player of the batch; it also settles any deadlock before Postgres's
-- detector would (transaction-id locks can cross player order). Catching the
-- error per event instead would need a subtransaction per event, which costs more than the batch
-- saves (measured: about 60 % more Postgres time per event).
--
-- Each event is one seamless_event row (sql/migrations/015: the union of the events' fields, a
-- field an event does not have NULL), as the app's Posting holds it. One row is returned per
-- event, in the same order.
--
-- It also takes each event's digest and the replay window, and answers two flags beside the
-- outcome: `processed` (this delivery ran now: the app stores its outcome in Redis) and
-- `replayed` (answered from an earlier delivery of the same request_id, seamless_requests).
CREATE OR REPLACE FUNCTION seamless_batch(
    p_events seamless_event[], p_lock_timeout_ms integer, p_replay_seconds integer
) RETURNS TABLE (
    reason text, detail text, balance bigint, currency text,
    wallet_transaction_id bigint, duplicate boolean, processed boolean, replayed boolean,
    credit_kind text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    e seamless_event;
    o wallet_outcome;
    prior seamless_requests%ROWTYPE;
    acc wallet_player;
    v_window interval := make_interval(secs => p_replay_seconds);
BEGIN
    IF p_lock_timeout_ms > 0 THEN
        -- For this transaction only: a batch must not sit behind one player's long-held row.
        PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    END IF;
    -- Every statement of the posting functions is a key lookup. PL/pgSQL caches a generic plan
    -- per statement and connection, made when the table may still have been nearly empty (a
    -- new install, seamless_requests filling up in its first minute): a sequential scan chosen
    -- then stays, and cost 10 ms per event in `make bench` before autovacuum's ANALYZE
    -- replaced it. Plans made inside a batch never take one where an index serves.
    PERFORM set_config('enable_seqscan', 'off', true);
    FOREACH e IN ARRAY coalesce(p_events, ARRAY[]::seamless_event[]) LOOP
        IF e.event NOT IN ('bet', 'result', 'cancel', 'result_change', 'promo_win',
                           'end_round', 'login', 'logout', 'balance') THEN
            RAISE EXCEPTION 'seamless_batch: unknown event %', e.event
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT * INTO prior FROM seamless_requests r
         WHERE r.provider = e.provider AND r.request_id = e.request_id
           AND r.created_at > now() - v_window;
        IF FOUND THEN
            processed := false;
            IF prior.event_hash <> e.event_hash THEN
                replayed := false;
                o := wallet_answer('idempotency_conflict', NULL, NULL, NULL, false,
                                   'request_id was already used for another event');
            ELSE
                -- The first delivery's outcome, its balance included, as Redis would have
                -- answered it (records written before the balance was kept: the balance now).
                replayed := true;
                IF prior.currency IS NULL THEN
                    acc := wallet_player_of(e.player_id);
                    prior.balance := acc.balance;
                    prior.currency := acc.currency;
                END IF;
                o := wallet_answer(prior.reason, prior.balance, prior.currency,
                                   prior.wallet_transaction_id, prior.duplicate, prior.detail);
            END IF;
        ELSE
            processed := true;
            replayed := false;
            o := CASE e.event
                WHEN 'bet' THEN seamless_bet(
                    e.provider, e.player_id, e.transaction_id, e.round_id, e.game_id, e.amount,
                    e.currency, e.token_hash, e.request_id, e.free_round_id)
                WHEN 'result' THEN seamless_result(
                    e.provider, e.player_id, e.transaction_id, e.round_id, e.game_id, e.amount,
                    e.currency, e.round_closed, e.request_id, e.result_kind)
                WHEN 'cancel' THEN seamless_cancel(
                    e.provider, e.player_id, e.transaction_id, e.ref_transaction_id, e.round_id,
                    e.amount, e.currency, e.request_id)
                WHEN 'result_change' THEN seamless_result_change(
                    e.provider, e.player_id, e.transaction_id, e.ref_transaction_id, e.round_id,
                    e.amount, e.currency, e.request_id)
                WHEN 'promo_win' THEN seamless_promo_win(
                    e.provider, e.player_id, e.transaction_id, e.promo_id, e.round_id, e.game_id,
                    e.amount, e.currency, e.request_id)
                WHEN 'end_round' THEN seamless_end_round(
                    e.provider, e.player_id, e.round_id, e.request_id)
                WHEN 'login' THEN seamless_login(e.provider, e.player_id, e.token_hash)
                WHEN 'logout' THEN seamless_logout(e.provider, e.player_id, e.token_hash)
                WHEN 'balance' THEN seamless_balance(e.provider, e.player_id)
            END;
            -- An expired row of a reused request_id not yet pruned is taken over; a live one can
            -- only be a delivery of the same request_id that committed while this one ran.
            INSERT INTO seamless_requests AS r (provider, request_id, event_hash, reason,
                                                detail, wallet_transaction_id, duplicate,
                                                balance, currency)
            VALUES (e.provider, e.request_id, e.event_hash, o.reason, o.detail,
                    o.wallet_transaction_id, o.duplicate, o.balance, o.currency)
            ON CONFLICT (provider, request_id) DO UPDATE
                SET event_hash = EXCLUDED.event_hash,
                    reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                    wallet_transaction_id = EXCLUDED.wallet_transaction_id,
                    duplicate = EXCLUDED.duplicate, balance = EXCLUDED.balance,
                    currency = EXCLUDED.currency, created_at = EXCLUDED.created_at
              WHERE r.created_at <= now() - v_window;
            IF NOT FOUND THEN
                -- Roll the batch back; posted again alone, this event finds that delivery's row.
                RAISE EXCEPTION 'request_id % of % was processed concurrently',
                    e.request_id, e.provider USING ERRCODE = 'unique_violation';
            END IF;
        END IF;
        reason := o.reason;
        detail := o.detail;
        balance := o.balance;
        currency := o.currency;
        wallet_transaction_id := o.wallet_transaction_id;
        duplicate := o.duplicate;
        credit_kind := o.credit_kind;
        RETURN NEXT;
    END LOOP;
END
$$;
