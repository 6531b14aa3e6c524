-- Responsible-gaming limits at a cost that does not grow with a player's history (issue 12).
--
-- wallet_limit_exceeded used to scan the window's postings once per limit: six limits and a
-- million bets this month cost a second per bet, and every other event of that bet's group-commit
-- batch waited for it. A player with wager or loss limits now has running totals per UTC day,
-- kept by the posting functions under the player's account row lock, which they already hold.
-- A check sums at most a month of day rows; a posting updates one row.
--
-- Why days, not one row per period: every window (a UTC day, a week from Monday, a month) is a
-- whole number of days, so a posting's day says which windows count it, a cancel can un-count
-- its bet in the bet's own day whenever it arrives, and a window rolls over by itself. The sums
-- are exactly what the scan summed: a posting is in the window iff its day is.
--
-- Totals are kept only while the player has wager or loss limit rows: a player without them
-- (most players) pays one index probe per money event for this, nothing more. When the first
-- such row appears, wallet_set_limit counts the current windows from the ledger once, under the
-- same row lock, so no posting falls between the count and the first update.
--
-- Also: a credit that would take a balance past the largest bigint is refused with R1
-- internal_error and a detail saying so, before anything is written (it used to raise
-- numeric_value_out_of_range mid-posting, failing its whole group-commit batch first).

-- --- running totals --------------------------------------------------------------------------

-- Sums of one player's postings stamped on one UTC day. numeric, not bigint: a sum of amounts
-- has no business overflowing, and a check compares it to a limit in numeric too.
CREATE TABLE player_limit_totals (
    player_id  text NOT NULL REFERENCES players (player_id),
    day        date NOT NULL,
    wagered    numeric NOT NULL,  -- bets placed that day and not refunded (amounts)
    won        numeric NOT NULL,  -- what results and result changes of that day paid (deltas)
    PRIMARY KEY (player_id, day)
);

-- The limit kinds counted against play; deposit limits are the payments' (sql/004).
CREATE FUNCTION wallet_play_limit_kinds() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['wager', 'loss']
$$;

-- Start of the calendar window (UTC, weeks from Monday) that holds p_at.
CREATE FUNCTION wallet_window_start(p_period text, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc(
        CASE p_period WHEN 'daily' THEN 'day' WHEN 'weekly' THEN 'week' ELSE 'month' END,
        p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The current window: one definition for limits and deposits alike.
CREATE OR REPLACE FUNCTION wallet_window_start(p_period text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT wallet_window_start(p_period, now())
$$;

CREATE FUNCTION wallet_utc_day(p_at timestamptz) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_at AT TIME ZONE 'UTC')::date
$$;

-- The first day any window holding p_at reaches back to: a day lies in its week and its month,
-- and the longer of those two starts first.
CREATE FUNCTION wallet_limit_totals_from(p_at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT wallet_utc_day(least(wallet_window_start('weekly', p_at),
                                wallet_window_start('monthly', p_at)))
$$;

-- Whether the player's totals are kept: they have wager or loss limit rows (in force, pending or
-- lifted but not yet removed). The one probe every money event of an unlimited player pays.
CREATE FUNCTION wallet_limit_totals_kept(p_player text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM player_limits
                    WHERE player_id = p_player AND kind = ANY (wallet_play_limit_kinds()))
$$;

-- Counts the player's totals afresh from the ledger, for every day a current window reaches:
-- wagered is the bets not refunded (whenever the refund came), won the results and their
-- corrections. An operator action, which may scan; the caller holds the player's row lock.
CREATE FUNCTION wallet_limit_totals_recount(p_player text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_from timestamptz := wallet_limit_totals_from(now())::timestamp AT TIME ZONE 'UTC';
BEGIN
    DELETE FROM player_limit_totals WHERE player_id = p_player;
    INSERT INTO player_limit_totals (player_id, day, wagered, won)
    SELECT p_player, wallet_utc_day(t.created_at),
           coalesce(sum(t.amount) FILTER (WHERE t.kind = 'bet'), 0),
           coalesce(sum(t.delta) FILTER (WHERE t.kind <> 'bet'), 0)
      FROM ledger_transactions t
     WHERE t.player_id = p_player AND t.created_at >= v_from
       AND t.kind IN ('bet', 'result', 'result_change')
       AND NOT (t.kind = 'bet' AND EXISTS (
               SELECT 1 FROM ledger_transactions c
                WHERE c.source = t.source AND c.kind = 'cancel'
                  AND c.ref_external_id = t.external_id))
     GROUP BY wallet_utc_day(t.created_at);
END
$$;

-- Adds posting p_tx of a kept player to the totals of its day. The caller holds the player's
-- account row lock, so nothing else writes this player's rows meanwhile. What is added is read
-- off the posting itself (its stamp, amount and delta), so the totals cannot drift from it.
CREATE FUNCTION wallet_limit_totals_add(p_player text, p_tx bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    v_day date;
    v_wagered bigint := 0;
    v_won bigint := 0;
BEGIN
    SELECT kind, amount, delta, created_at, source, ref_external_id INTO t
      FROM ledger_transactions WHERE id = p_tx;
    IF t.kind = 'bet' THEN
        v_day := wallet_utc_day(t.created_at);
        v_wagered := t.amount;
    ELSIF t.kind = 'cancel' THEN
        -- A refund un-counts its bet in the bet's own day, however late it comes; a cancel of a
        -- bet never posted (a tombstone) refunded nothing.
        SELECT wallet_utc_day(b.created_at), -b.amount INTO v_day, v_wagered
          FROM ledger_transactions b
         WHERE b.source = t.source AND b.external_id = t.ref_external_id AND b.kind = 'bet';
        IF NOT FOUND THEN
            RETURN;
        END IF;
    ELSE  -- result, result_change
        v_day := wallet_utc_day(t.created_at);
        v_won := t.delta;
    END IF;
    UPDATE player_limit_totals SET wagered = wagered + v_wagered, won = won + v_won
     WHERE player_id = p_player AND day = v_day;
    IF FOUND OR t.kind = 'cancel' THEN
        -- A refund whose day has no row is of a day before every current window: no check
        -- reads it any more.
        RETURN;
    END IF;
    -- The first posting of a new day. Days no current window reaches are dropped here, with a
    -- day's margin: a transaction that began before midnight may still be waiting for this
    -- player's row lock and then checks the windows of its own start.
    DELETE FROM player_limit_totals
     WHERE player_id = p_player AND day < wallet_limit_totals_from(now() - interval '1 day');
    INSERT INTO player_limit_totals (player_id, day, wagered, won)
    VALUES (p_player, v_day, v_wagered, v_won);
END
$$;

-- Would a bet of p_amount break one of the player's wager or loss limits in force? Wagered: bets
-- placed in the window and not refunded. Loss: wagered less what results and corrections paid in
-- the window. The new bet counts in full towards both, as it may be lost. Reads the totals, so
-- only meaningful while they are kept (while the player has such limit rows, which it reads).
CREATE OR REPLACE FUNCTION wallet_limit_exceeded(p_player text, p_amount bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN coalesce((
        SELECT bool_or(greatest(u.wagered - CASE WHEN l.kind = 'loss' THEN u.won ELSE 0 END, 0)
                       + p_amount > l.amount)
          FROM (SELECT kind, wallet_limit_in_force(amount, next_amount, next_from) AS amount,
                       wallet_utc_day(wallet_window_start(period)) AS first_day
                  FROM player_limits
                 WHERE player_id = p_player AND kind = ANY (wallet_play_limit_kinds())) l
         CROSS JOIN LATERAL (
               SELECT coalesce(sum(t.wagered), 0) AS wagered, coalesce(sum(t.won), 0) AS won
                 FROM player_limit_totals t
                WHERE t.player_id = p_player AND t.day >= l.first_day) u
         WHERE l.amount IS NOT NULL), false);
END
$$;

-- Set (p_amount) or remove (NULL) one limit; answers the row as it then stands. Rules as before
-- (sql/003): a new or lower limit applies at once, a raise or a removal after p_cooling_off.
-- New: it takes the player's account row lock first. Two first settings of one limit at once
-- then run one after the other (they both inserted the row, and one failed), and no posting can
-- fall between counting the totals from the ledger and the postings that keep them.
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

-- Players with wager or loss limits from before this migration: their totals, counted once,
-- each under the player's row lock.
SELECT wallet_lock_player(player_id), wallet_limit_totals_recount(player_id)
  FROM (SELECT DISTINCT player_id FROM player_limits
         WHERE kind = ANY (wallet_play_limit_kinds())) AS limited
 ORDER BY player_id;

-- --- the largest balance ---------------------------------------------------------------------

-- R1 internal_error when crediting p_credit to p_balance would pass the largest amount a
-- balance (a bigint) can hold; NULL when it fits. Checked before anything is written, so the
-- event posts nothing and its batch carries on: it used to raise mid-posting instead.
CREATE FUNCTION wallet_credit_overflow(p_balance bigint, p_credit bigint, p_currency text)
RETURNS wallet_outcome LANGUAGE sql IMMUTABLE AS $$
    SELECT wallet_answer('R1', 'internal_error', p_balance, p_currency, NULL, false,
               format('the balance would pass the largest amount the wallet can hold (%s); '
                      'nothing was posted', 9223372036854775807))
     WHERE p_credit > 0 AND p_balance > 9223372036854775807 - p_credit
$$;

-- --- the money events: as in sql/002, plus the totals and the overflow guard ----------------

CREATE OR REPLACE FUNCTION seamless_bet(
    p_provider text, p_player text, p_txn text, p_round text, p_game text,
    p_amount bigint, p_currency text, p_token_hash bytea, p_request_id text
) RETURNS wallet_outcome LANGUAGE plpgsql AS $$
DECLARE
    opened record;
    acc wallet_player;
    o wallet_outcome;
    v_problem text;
    v_closed timestamptz;
    v_kept boolean;
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
    v_kept := wallet_limit_totals_kept(p_player);
    IF v_kept AND wallet_limit_exceeded(p_player, p_amount) THEN
        RETURN wallet_answer('R1', 'limit_exceeded', acc.balance, acc.currency);
    END IF;
    IF acc.balance < p_amount THEN
        RETURN wallet_answer('R4', 'insufficient_funds', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'bet', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, -p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider);
    IF v_kept THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    INSERT INTO rounds (provider, player_id, round_id, game_id, bets)
         VALUES (p_provider, p_player, p_round, p_game, 1)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE SET bets = rounds.bets + 1;
    RETURN wallet_answer('R0', 'ok', acc.balance - p_amount, acc.currency, v_tx);
END
$$;

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
        -- result for a round with no other bet is refused as cancelled. It refunds nothing, so
        -- no limit total changes.
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
    o := wallet_credit_overflow(acc.balance, bet.amount, acc.currency);
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'cancel', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, bet.amount, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider);
    IF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    UPDATE rounds SET cancelled_bets = cancelled_bets + 1
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    RETURN wallet_answer('R0', 'ok', acc.balance + bet.amount, acc.currency, v_tx);
END
$$;

CREATE OR REPLACE FUNCTION seamless_result(
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
    o := wallet_credit_overflow(acc.balance, p_amount, acc.currency);
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;

    -- Wins land whatever the player's status or session: the stake was taken when it was allowed.
    v_tx := wallet_post(p_provider, p_txn, 'result', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, p_amount, p_round, p_game, NULL, p_request_id,
                        'provider', p_provider);
    IF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    INSERT INTO rounds (provider, player_id, round_id, game_id, results, closed_at)
         VALUES (p_provider, p_player, p_round, p_game, 1,
                 CASE WHEN p_round_closed THEN now() END)
    ON CONFLICT (provider, player_id, round_id) DO UPDATE
        SET results = rounds.results + 1,
            closed_at = CASE WHEN p_round_closed THEN now() END;
    RETURN wallet_answer('R0', 'ok', acc.balance + p_amount, acc.currency, v_tx);
END
$$;

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
    -- The result's current total is the latest correction, or the result itself. Both are
    -- amounts of 0 or more, so their difference fits a bigint.
    SELECT amount INTO v_current FROM ledger_transactions
     WHERE source = p_provider AND kind = 'result_change' AND ref_external_id = p_ref
     ORDER BY id DESC LIMIT 1;
    v_diff := p_amount - coalesce(v_current, res.amount);
    -- First: with a positive difference, the sum below is what would overflow.
    o := wallet_credit_overflow(acc.balance, v_diff, acc.currency);
    IF o.code IS NOT NULL THEN
        RETURN o;
    END IF;
    IF acc.balance + v_diff < 0 THEN
        RETURN wallet_answer('R4', 'insufficient_funds', acc.balance, acc.currency);
    END IF;

    v_tx := wallet_post(p_provider, p_txn, 'result_change', p_player, acc.account_id, acc.balance,
                        acc.currency, p_amount, v_diff, p_round, NULL, p_ref, p_request_id,
                        'provider', p_provider);
    IF wallet_limit_totals_kept(p_player) THEN
        PERFORM wallet_limit_totals_add(p_player, v_tx);
    END IF;
    RETURN wallet_answer('R0', 'ok', acc.balance + v_diff, acc.currency, v_tx);
END
$$;
