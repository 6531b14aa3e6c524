-- Rounds for operators: when a round is stale, which postings are its timeline, and the
-- operator's settlement of a stale round (app/operator/rounds.py).
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- The round's state, from the counts and stamps the posting functions keep (the one definition;
-- sql/migrations/021):
--   open       bets (or results with round_closed false) and no closing yet;
--   cancelled  every bet cancelled, nothing closed it;
--   closed     closed by a result, or by end_round (closed_by says which);
--   settled    settled by an operator (settled_action refund or close).
CREATE OR REPLACE FUNCTION wallet_round_state(r rounds) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN r.settled_action IS NOT NULL THEN 'settled'
                WHEN r.closed_at IS NOT NULL THEN 'closed'
                WHEN r.bets > 0 AND r.bets = r.cancelled_bets THEN 'cancelled'
                ELSE 'open' END
$$;

-- Stale: open, with a bet not cancelled, and older than the configured age
-- (WALLET_ROUND_STALE_SECONDS). The one definition the listing, the gauge and the settlement
-- read. A simple SQL function, inlined by the planner.
CREATE OR REPLACE FUNCTION wallet_round_stale(
    p_state text, p_bets integer, p_cancelled_bets integer, p_created_at timestamptz,
    p_age_seconds integer
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_state = 'open' AND p_bets > p_cancelled_bets
       AND p_created_at < now() - make_interval(secs => p_age_seconds)
$$;

-- The ledger ids of a round's postings, in order: the player's postings since the round began
-- (ledger_by_player), all of them stamped after it, of the round's provider and id. Nothing per
-- posting is written for it (sql/migrations/020).
CREATE OR REPLACE FUNCTION wallet_round_transactions(
    p_provider text, p_player text, p_round text
) RETURNS bigint[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    SELECT created_at INTO r FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    IF NOT FOUND THEN
        RETURN '{}';
    END IF;
    RETURN ARRAY(
        SELECT id FROM ledger_transactions
         WHERE player_id = p_player AND created_at >= r.created_at
           AND source = p_provider AND round_id = p_round
           AND kind IN ('bet', 'cancel', 'result', 'result_change')
         ORDER BY id);
END
$$;

-- The bets among a round's postings (p_txs) that no cancel refunded yet, in order: what a
-- settlement's refund gives back.
CREATE OR REPLACE FUNCTION wallet_round_open_bets(p_provider text, p_txs bigint[])
RETURNS TABLE (external_id text, amount bigint, free_round_id bigint) LANGUAGE sql STABLE AS $$
    SELECT b.external_id, b.amount, b.free_round_id FROM ledger_transactions b
     WHERE b.id = ANY(p_txs) AND b.kind = 'bet'
       AND NOT EXISTS (
           SELECT 1 FROM ledger_transactions c
            WHERE c.source = p_provider AND c.kind = 'cancel'
              AND c.ref_external_id = b.external_id)
     ORDER BY b.id
$$;

-- Settles a stale round for an operator: `refund` gives back every bet of the round not yet
-- cancelled (a cancel posted as the provider's, its external id '#settle:<bet id>', one a
-- provider can never send), `close` closes it as it stands (the bets lost). Either way the
-- round is closed by the operator and the settlement is a round event.
--
-- Under the player's account row lock, the lock of every money event of the player: a late
-- result or cancel of the provider waits for the settlement and then finds the round closed
-- (R1 round_closed) or the bet refunded (R0 duplicate), or it went first and the round is
-- re-checked here under its own row lock. Answers 'ok', or why the round may not be settled:
-- 'round_not_found', its state ('closed', 'cancelled', 'settled'), 'no_open_bets' (open, with
-- no bet left to settle), 'not_stale' (open and younger than the age), and for a refund
-- 'has_results' (a result left the round open) or 'overflow' (the refunds would take the
-- balance past the largest bigint). Nothing is written unless it answers 'ok'.
CREATE OR REPLACE FUNCTION wallet_settle_round(
    p_provider text, p_player text, p_round text, p_action text, p_reason text,
    p_actor text, p_request_id text, p_age_seconds integer
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    acc wallet_player;
    r record;
    bet record;
    v_txs bigint[];
    v_balance bigint;
    v_tx bigint;
BEGIN
    IF p_action NOT IN ('refund', 'close') THEN
        RAISE EXCEPTION 'unknown settle action %', p_action USING ERRCODE = 'invalid_parameter_value';
    END IF;
    acc := wallet_lock_player(p_player);
    IF acc.account_id IS NULL THEN
        RETURN 'round_not_found';
    END IF;
    SELECT wallet_round_state(rounds) AS state, bets, cancelled_bets, results, created_at
      INTO r FROM rounds
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'round_not_found';
    END IF;
    IF r.state <> 'open' THEN
        RETURN r.state;
    END IF;
    IF r.bets <= r.cancelled_bets THEN
        RETURN 'no_open_bets';
    END IF;
    IF NOT wallet_round_stale(r.state, r.bets, r.cancelled_bets, r.created_at, p_age_seconds) THEN
        RETURN 'not_stale';
    END IF;
    -- A round with a result (one that left it open) has paid a win: refunding its stakes too
    -- would pay twice, as a provider's own cancel would be refused (bet_already_settled). Such
    -- a round is closed, not refunded.
    IF p_action = 'refund' AND r.results > 0 THEN
        RETURN 'has_results';
    END IF;
    v_txs := wallet_round_transactions(p_provider, p_player, p_round);
    v_balance := acc.balance;
    IF p_action = 'refund' THEN
        -- The refunds' total first: a balance they would take past the largest amount a balance
        -- can hold refuses the settlement before anything is written.
        IF (wallet_credit_overflow(
                acc.balance,
                (SELECT coalesce(sum(amount), 0) FROM wallet_round_open_bets(p_provider, v_txs))::bigint,
                acc.currency)).reason IS NOT NULL THEN
            RETURN 'overflow';
        END IF;
        FOR bet IN SELECT * FROM wallet_round_open_bets(p_provider, v_txs) LOOP
            v_tx := wallet_post(p_provider, '#settle:' || bet.external_id, 'cancel', p_player,
                                acc.account_id, v_balance, acc.currency, bet.amount, bet.amount,
                                p_round, NULL, bet.external_id, p_request_id,
                                'provider', p_provider,
                                jsonb_build_object('settled_by', p_actor, 'reason', p_reason));
            v_balance := v_balance + bet.amount;
            IF wallet_limit_totals_kept(p_player) THEN
                PERFORM wallet_limit_totals_add(p_player, v_tx);
            END IF;
            IF bet.free_round_id IS NOT NULL THEN
                UPDATE free_rounds SET used = used - 1 WHERE id = bet.free_round_id AND used > 0;
            END IF;
        END LOOP;
    END IF;
    UPDATE rounds
       SET closed_at = now(), closed_by = 'operator', settled_action = p_action,
           cancelled_bets = CASE WHEN p_action = 'refund' THEN bets ELSE cancelled_bets END
     WHERE provider = p_provider AND player_id = p_player AND round_id = p_round;
    INSERT INTO round_events (provider, player_id, round_id, event, request_id, actor, reason)
    VALUES (p_provider, p_player, p_round, 'settle_' || p_action, p_request_id, p_actor, p_reason);
    RETURN 'ok';
END
$$;

-- The stale sweep: the rounds that came of age since the last sweep (a slice of the rounds_by_time
-- BRIN index), kept in stale_rounds when still open with a bet; and the rows of stale_rounds
-- whose round has since been closed, cancelled or settled, deleted. Run every minute by each
-- process (app/operator/rounds.py, count_stale_forever); two at once: the second finds the lock
-- taken and leaves it to the first. The first sweep of a database reads every round once.
CREATE OR REPLACE FUNCTION wallet_sweep_stale(p_age_seconds integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_from timestamptz;
    v_to timestamptz := now() - make_interval(secs => p_age_seconds);
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('wallet_sweep_stale', 0)) THEN
        RETURN;
    END IF;
    SELECT swept_to INTO v_from FROM stale_sweep;
    IF v_from < v_to THEN
        -- EXECUTE: planned with the slice's bounds known, so the planner sees a narrow range of
        -- rounds_by_time (a cached generic plan would guess at a third of the table).
        EXECUTE 'INSERT INTO stale_rounds (provider, player_id, round_id, created_at)
                 SELECT provider, player_id, round_id, created_at FROM rounds
                  WHERE created_at >= $1 AND created_at < $2
                    AND wallet_round_stale(wallet_round_state(rounds), bets, cancelled_bets,
                                           created_at, $3)
                 ON CONFLICT DO NOTHING'
            USING v_from, v_to, p_age_seconds;
        UPDATE stale_sweep SET swept_to = v_to;
    END IF;
    DELETE FROM stale_rounds s
     USING rounds r
     WHERE r.provider = s.provider AND r.player_id = s.player_id AND r.round_id = s.round_id
       AND NOT (wallet_round_state(r) = 'open' AND r.bets > r.cancelled_bets);
END
$$;

-- The rounds stale now: those a sweep kept, and those come of age since the last sweep (at most
-- a minute of rounds, a range of rounds_by_time), each checked on the round itself. What the
-- listing and the gauge read, exact whenever they run. EXECUTE plans it with the slice's bound
-- known (see wallet_sweep_stale); ROWS tells callers it is few, so they join it to rounds by key.
CREATE OR REPLACE FUNCTION wallet_stale_rounds(p_age_seconds integer)
RETURNS TABLE (provider text, player_id text, round_id text) LANGUAGE plpgsql STABLE ROWS 100
AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT r.provider, r.player_id, r.round_id
           FROM stale_rounds s
           JOIN rounds r ON r.provider = s.provider AND r.player_id = s.player_id
                        AND r.round_id = s.round_id
          WHERE wallet_round_stale(wallet_round_state(r), r.bets, r.cancelled_bets,
                                   r.created_at, $2)
         UNION
         SELECT n.provider, n.player_id, n.round_id FROM rounds n
          WHERE n.created_at >= $1 AND n.created_at < now() - make_interval(secs => $2)
            AND wallet_round_stale(wallet_round_state(n), n.bets, n.cancelled_bets,
                                   n.created_at, $2)'
        USING (SELECT swept_to FROM stale_sweep), p_age_seconds;
END
$$;
