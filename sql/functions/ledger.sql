-- Ledger functions: the postings every money event makes, the player's account lock, and the
-- running limit totals the posting functions keep under that lock.
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- The trigger that keeps ledger rows (and the audit log, payment transitions) append-only.
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

-- One answer of a money function (the wallet_outcome row every seamless function returns): a
-- reason of the contract; the app derives its R-code (app/seamless/outcome.py, Reason). The
-- function that credits sets the outcome's credit_kind itself.
CREATE OR REPLACE FUNCTION wallet_answer(
    p_reason text, p_balance bigint, p_currency text,
    p_tx bigint DEFAULT NULL, p_duplicate boolean DEFAULT false, p_detail text DEFAULT NULL
) RETURNS wallet_outcome LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_reason, p_detail, p_balance, p_currency, p_tx, p_duplicate, NULL)::wallet_outcome
$$;

-- R1 internal_error when crediting p_credit to p_balance would pass the largest amount a
-- balance (a bigint) can hold; NULL when it fits. Checked before anything is written, so the
-- event posts nothing and its batch carries on (raising mid-posting would fail the whole batch).
CREATE OR REPLACE FUNCTION wallet_credit_overflow(p_balance bigint, p_credit bigint, p_currency text)
RETURNS wallet_outcome LANGUAGE sql IMMUTABLE AS $$
    SELECT wallet_answer('internal_error', p_balance, p_currency, NULL, false,
               format('the balance would pass the largest amount the wallet can hold (%s); '
                      'nothing was posted', 9223372036854775807))
     WHERE p_credit > 0 AND p_balance > 9223372036854775807 - p_credit
$$;

-- The clearing account of a provider (or a house purpose) in one currency, created on first use.
CREATE OR REPLACE FUNCTION wallet_clearing_account(p_kind text, p_owner text, p_currency text)
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
-- pages never show a balance_after out of sequence. A result (and its corrections) carries its
-- kind of win, a bet of a free round its grant.
CREATE OR REPLACE FUNCTION wallet_post(
    p_source text, p_external_id text, p_kind text, p_player text, p_account bigint,
    p_balance bigint, p_currency text, p_amount bigint, p_delta bigint,
    p_round text, p_game text, p_ref text, p_request_id text,
    p_counter_kind text, p_counter_owner text, p_metadata jsonb DEFAULT NULL,
    p_result_kind text DEFAULT NULL, p_free_round bigint DEFAULT NULL
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
        round_id, game_id, ref_external_id, request_id, metadata, result_kind, free_round_id,
        created_at)
    VALUES (
        p_source, p_external_id, p_kind, p_player, p_currency, p_amount, p_delta,
        p_balance + p_delta, p_round, p_game, p_ref, p_request_id, p_metadata, p_result_kind,
        p_free_round, clock_timestamp())
    RETURNING id INTO v_tx;
    IF p_delta <> 0 THEN
        INSERT INTO entries (transaction_id, account_id, amount) VALUES
            (v_tx, p_account, p_delta),
            (v_tx, wallet_clearing_account(p_counter_kind, p_counter_owner, p_currency), -p_delta);
    END IF;
    RETURN v_tx;
END
$$;

-- A posting between two house accounts on behalf of a player (settling a withdrawal hold): the
-- player's balance does not move, so it has entries but no player entry.
CREATE OR REPLACE FUNCTION wallet_post_house(
    p_source text, p_external_id text, p_kind text, p_player text, p_currency text,
    p_amount bigint, p_from_owner text, p_to_owner text, p_metadata jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player := wallet_player_of(p_player);
    v_tx bigint;
BEGIN
    INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency, amount,
                                     delta, balance_after, metadata, created_at)
    VALUES (p_source, p_external_id, p_kind, p_player, p_currency, p_amount, 0, acc.balance,
            p_metadata, clock_timestamp())
    RETURNING id INTO v_tx;
    INSERT INTO entries (transaction_id, account_id, amount) VALUES
        (v_tx, wallet_clearing_account('house', p_from_owner, p_currency), -p_amount),
        (v_tx, wallet_clearing_account('house', p_to_owner, p_currency), p_amount);
    RETURN v_tx;
END
$$;

-- A player's account, balance, currency and status, without a lock.
CREATE OR REPLACE FUNCTION wallet_player_of(p_player text) RETURNS wallet_player LANGUAGE sql STABLE AS $$
    SELECT ROW(a.id, a.balance, p.currency, p.status)::wallet_player
      FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = p_player
$$;

-- The same, holding the account row lock until the transaction ends: the serialisation point of
-- all of one player's money events.
CREATE OR REPLACE FUNCTION wallet_lock_player(p_player text) RETURNS wallet_player LANGUAGE sql AS $$
    SELECT ROW(a.id, a.balance, p.currency, p.status)::wallet_player
      FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = p_player
       FOR UPDATE OF a
$$;

-- The limit kinds counted against play; deposit limits are the payments' (payments.sql).
CREATE OR REPLACE FUNCTION wallet_play_limit_kinds() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['wager', 'loss']
$$;

-- Start of the calendar window (UTC, weeks from Monday) that holds p_at.
CREATE OR REPLACE FUNCTION wallet_window_start(p_period text, p_at timestamptz) RETURNS timestamptz
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

-- The UTC day of p_at: the unit player_limit_totals counts in.
CREATE OR REPLACE FUNCTION wallet_utc_day(p_at timestamptz) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_at AT TIME ZONE 'UTC')::date
$$;

-- The amount in force now for one limit row; NULL when a pending removal has taken effect.
CREATE OR REPLACE FUNCTION wallet_limit_in_force(p_amount bigint, p_next_amount bigint, p_next_from timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_next_from IS NOT NULL AND p_next_from <= now()
                THEN p_next_amount ELSE p_amount END
$$;

-- The first day any window holding p_at reaches back to: a day lies in its week and its month,
-- and the longer of those two starts first.
CREATE OR REPLACE FUNCTION wallet_limit_totals_from(p_at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT wallet_utc_day(least(wallet_window_start('weekly', p_at),
                                wallet_window_start('monthly', p_at)))
$$;

-- Whether the player's totals are kept: they have wager or loss limit rows (in force, pending or
-- lifted but not yet removed). The one probe every money event of an unlimited player pays.
CREATE OR REPLACE FUNCTION wallet_limit_totals_kept(p_player text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM player_limits
                    WHERE player_id = p_player AND kind = ANY (wallet_play_limit_kinds()))
$$;

-- Counts the player's totals afresh from the ledger, for every day a current window reaches:
-- wagered is the bets not refunded (whenever the refund came), won the results and their
-- corrections. An operator action, which may scan; the caller holds the player's row lock.
CREATE OR REPLACE FUNCTION wallet_limit_totals_recount(p_player text) RETURNS void
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
CREATE OR REPLACE FUNCTION wallet_limit_totals_add(p_player text, p_tx bigint) RETURNS void
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
