-- Delivery replay that survives the loss of Redis.
--
-- Redis remembers each request_id's outcome for the replay window, but local Redis keeps nothing
-- on disk: after a restart a captured delivery (say, a bet refused R4 before the player was
-- funded) would be processed again. So every delivery that reaches the ledger also leaves its
-- outcome here, in the same transaction as its postings: the outcome and the money commit
-- together or not at all. Redis stays the fast path; this table decides only when Redis has
-- forgotten.
--
-- A request_id sent again with another event is refused (R3 idempotency_conflict): event_hash is
-- a digest of every field of the event but its timestamp, computed by the app.
CREATE TABLE seamless_requests (
    provider               text NOT NULL,
    request_id             text NOT NULL,
    event_hash             bytea NOT NULL,
    code                   text NOT NULL,
    reason                 text NOT NULL,
    detail                 text,
    wallet_transaction_id  bigint,
    duplicate              boolean NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, request_id)
);
-- Rows arrive in time order, so a BRIN index finds the expired ones for pruning at almost no
-- cost per insert (a B-tree would be a second index write on every event).
CREATE INDEX seamless_requests_by_time ON seamless_requests USING brin (created_at);

-- The batch now also takes each event's digest and the replay window, and answers two flags
-- beside the outcome: `processed` (this delivery ran now: the app stores its outcome in Redis)
-- and `replayed` (answered from an earlier delivery of the same request_id).
DROP FUNCTION seamless_batch(text[], text[], text[], text[], text[], text[], text[], bigint[],
                             text[], bytea[], boolean[], text[], integer);

CREATE FUNCTION seamless_batch(
    p_event text[], p_provider text[], p_player text[], p_txn text[], p_ref text[],
    p_round text[], p_game text[], p_amount bigint[], p_currency text[],
    p_token_hash bytea[], p_round_closed boolean[], p_request_id text[], p_event_hash bytea[],
    p_lock_timeout_ms integer, p_replay_seconds integer
) RETURNS TABLE (
    code text, reason text, detail text, balance bigint, currency text,
    wallet_transaction_id bigint, duplicate boolean, processed boolean, replayed boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
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
    FOR i IN 1 .. coalesce(array_length(p_event, 1), 0) LOOP
        IF p_event[i] NOT IN ('bet', 'result', 'cancel', 'result_change', 'login', 'logout',
                              'balance') THEN
            RAISE EXCEPTION 'seamless_batch: unknown event %', p_event[i]
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT * INTO prior FROM seamless_requests r
         WHERE r.provider = p_provider[i] AND r.request_id = p_request_id[i]
           AND r.created_at > now() - v_window;
        IF FOUND THEN
            processed := false;
            IF prior.event_hash <> p_event_hash[i] THEN
                replayed := false;
                o := wallet_answer('R3', 'idempotency_conflict', NULL, NULL, NULL, false,
                                   'request_id was already used for another event');
            ELSE
                -- The first delivery's outcome, with the player's balance as it is now.
                replayed := true;
                acc := wallet_player_of(p_player[i]);
                o := wallet_answer(prior.code, prior.reason, acc.balance, acc.currency,
                                   prior.wallet_transaction_id, prior.duplicate, prior.detail);
            END IF;
        ELSE
            processed := true;
            replayed := false;
            o := CASE p_event[i]
                WHEN 'bet' THEN seamless_bet(
                    p_provider[i], p_player[i], p_txn[i], p_round[i], p_game[i], p_amount[i],
                    p_currency[i], p_token_hash[i], p_request_id[i])
                WHEN 'result' THEN seamless_result(
                    p_provider[i], p_player[i], p_txn[i], p_round[i], p_game[i], p_amount[i],
                    p_currency[i], p_round_closed[i], p_request_id[i])
                WHEN 'cancel' THEN seamless_cancel(
                    p_provider[i], p_player[i], p_txn[i], p_ref[i], p_round[i], p_amount[i],
                    p_currency[i], p_request_id[i])
                WHEN 'result_change' THEN seamless_result_change(
                    p_provider[i], p_player[i], p_txn[i], p_ref[i], p_round[i], p_amount[i],
                    p_currency[i], p_request_id[i])
                WHEN 'login' THEN seamless_login(p_provider[i], p_player[i], p_token_hash[i])
                WHEN 'logout' THEN seamless_logout(p_provider[i], p_player[i], p_token_hash[i])
                WHEN 'balance' THEN seamless_balance(p_provider[i], p_player[i])
            END;
            -- An expired row of a reused request_id not yet pruned is taken over; a live one can
            -- only be a delivery of the same request_id that committed while this one ran.
            INSERT INTO seamless_requests AS r (provider, request_id, event_hash, code, reason,
                                                detail, wallet_transaction_id, duplicate)
            VALUES (p_provider[i], p_request_id[i], p_event_hash[i], o.code, o.reason, o.detail,
                    o.wallet_transaction_id, o.duplicate)
            ON CONFLICT (provider, request_id) DO UPDATE
                SET event_hash = EXCLUDED.event_hash, code = EXCLUDED.code,
                    reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                    wallet_transaction_id = EXCLUDED.wallet_transaction_id,
                    duplicate = EXCLUDED.duplicate, created_at = EXCLUDED.created_at
              WHERE r.created_at <= now() - v_window;
            IF NOT FOUND THEN
                -- Roll the batch back; posted again alone, this event finds that delivery's row.
                RAISE EXCEPTION 'request_id % of % was processed concurrently',
                    p_request_id[i], p_provider[i] USING ERRCODE = 'unique_violation';
            END IF;
        END IF;
        code := o.code;
        reason := o.reason;
        detail := o.detail;
        balance := o.balance;
        currency := o.currency;
        wallet_transaction_id := o.wallet_transaction_id;
        duplicate := o.duplicate;
        RETURN NEXT;
    END LOOP;
END
$$;
