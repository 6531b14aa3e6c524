-- Events to the operator's platform (deposit.*, withdrawal.*): a transactional outbox. Each event
-- is written in the same transaction as the status change it reports, so none is lost and none
-- is invented; a worker delivers them, signed, with backoff, and keeps what never got through.

CREATE TABLE operator_events (
    id               text PRIMARY KEY,
    type             text NOT NULL,
    payment_id       text NOT NULL REFERENCES payments (id),
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    dead_at          timestamptz,
    last_error       text,
    replays          integer NOT NULL DEFAULT 0
);
CREATE INDEX operator_events_due ON operator_events (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX operator_events_by_time ON operator_events (created_at, id);
CREATE INDEX operator_events_by_payment ON operator_events (payment_id, created_at);

-- Record the event for a payment's current status ("deposit.succeeded", ...).
CREATE FUNCTION operator_event(p_payment_id text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    pay payments%ROWTYPE;
    v_id text := 'evt_' || replace(gen_random_uuid()::text, '-', '');
BEGIN
    SELECT * INTO pay FROM payments WHERE id = p_payment_id;
    INSERT INTO operator_events (id, type, payment_id, payload)
    VALUES (v_id, pay.kind || '.' || pay.status, pay.id, jsonb_build_object(
        'id', v_id,
        'type', pay.kind || '.' || pay.status,
        'created', extract(epoch FROM clock_timestamp())::bigint,
        'data', jsonb_build_object(
            'id', pay.id, 'kind', pay.kind, 'status', pay.status, 'player_id', pay.player_id,
            'amount', pay.amount, 'currency', pay.currency, 'method', pay.method,
            'reference', pay.reference, 'failure_code', pay.failure_code)));
END
$$;

-- Every transition now also records its event, in the same transaction.
CREATE OR REPLACE FUNCTION payment_transition(
    p_id text, p_to text, p_trigger text, p_detail jsonb DEFAULT NULL,
    p_failure_code text DEFAULT NULL
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    pay payments%ROWTYPE;
    acc wallet_player;
    v_psp text;
BEGIN
    SELECT * INTO pay FROM payments WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM payment_state_edges
                                 WHERE kind = pay.kind AND from_status = pay.status
                                   AND to_status = p_to) THEN
        RETURN NULL;
    END IF;
    v_psp := 'psp:' || coalesce(pay.psp, 'unrouted');
    IF pay.kind = 'deposit' AND p_to = 'succeeded' THEN
        acc := wallet_lock_player(pay.player_id);
        PERFORM wallet_post('#payment', pay.id, 'deposit', pay.player_id, acc.account_id,
                            acc.balance, pay.currency, pay.amount, pay.amount, NULL, NULL, NULL,
                            NULL, 'house', v_psp, jsonb_build_object('payment_id', pay.id));
    ELSIF pay.kind = 'withdrawal' AND p_to IN ('failed', 'rejected') THEN
        acc := wallet_lock_player(pay.player_id);
        PERFORM wallet_post('#payment', pay.id || ':release', 'withdrawal_release',
                            pay.player_id, acc.account_id, acc.balance, pay.currency, pay.amount,
                            pay.amount, NULL, NULL, NULL, NULL, 'house', 'withdrawal_holds',
                            jsonb_build_object('payment_id', pay.id));
    ELSIF pay.kind = 'withdrawal' AND p_to = 'paid' THEN
        PERFORM wallet_post_house('#payment', pay.id || ':settle', 'withdrawal_settle',
                                  pay.player_id, pay.currency, pay.amount, 'withdrawal_holds',
                                  v_psp, jsonb_build_object('payment_id', pay.id));
    END IF;
    UPDATE payments SET status = p_to, updated_at = now(),
           failure_code = coalesce(p_failure_code, failure_code)
     WHERE id = p_id;
    INSERT INTO payment_transitions (payment_id, from_status, to_status, trigger, detail)
    VALUES (p_id, pay.status, p_to, p_trigger, p_detail);
    PERFORM operator_event(p_id);
    RETURN p_to;
END
$$;
