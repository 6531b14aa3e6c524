-- Payouts that went out to a PSP stay with that PSP (contract 3 [1.1]), and one Idempotency-Key
-- is one withdrawal even when two players' requests race with it.

-- When the payout request left for payments.psp: from then on no other route may be asked.
ALTER TABLE payments ADD COLUMN sent_at timestamptz;
CREATE INDEX payments_attention ON payments (created_at, id)
    WHERE flagged IS NOT NULL OR status = 'held';

-- Operator actions (approve, reject, resolve, replay) taken with an Idempotency-Key: the first
-- answer, given again for the same key and body. The row is inserted in the transaction of the
-- action itself, so a request racing with the same key waits for it and then gets its answer.
CREATE TABLE operator_requests (
    idempotency_key  text PRIMARY KEY,
    request_hash     bytea NOT NULL,   -- method, path and body of the first request
    status           smallint NOT NULL,
    response         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- As in sql/004, with the key taken first: two players' requests with one key lock different
-- player rows, so without it both found no prior payment and one failed on the unique key.
CREATE OR REPLACE FUNCTION payment_create_withdrawal(
    p_id text, p_player text, p_amount bigint, p_currency text, p_method text, p_reference text,
    p_metadata jsonb, p_key text, p_hash bytea, p_expires_at timestamptz
) RETURNS TABLE (outcome text, payment_id text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    acc wallet_player;
    prior record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('withdrawal-key|' || p_key, 0));
    acc := wallet_lock_player(p_player);
    SELECT id, request_hash INTO prior FROM payments
     WHERE kind = 'withdrawal' AND idempotency_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN prior.request_hash = p_hash THEN 'duplicate'
                                 ELSE 'idempotency_conflict' END, prior.id;
        RETURN;
    END IF;
    IF acc.account_id IS NULL THEN
        RETURN QUERY SELECT 'player_not_found', NULL::text;
        RETURN;
    END IF;
    IF acc.currency <> p_currency THEN
        RETURN QUERY SELECT 'currency_mismatch', NULL::text;
        RETURN;
    END IF;
    IF acc.balance < p_amount THEN
        RETURN QUERY SELECT 'insufficient_funds', NULL::text;
        RETURN;
    END IF;
    INSERT INTO payments (id, kind, player_id, amount, currency, method, reference, metadata,
                          status, idempotency_key, request_hash, expires_at)
    VALUES (p_id, 'withdrawal', p_player, p_amount, p_currency, p_method, p_reference,
            p_metadata, 'requested', p_key, p_hash, p_expires_at);
    PERFORM wallet_post('#payment', p_id || ':hold', 'withdrawal_hold', p_player,
                        acc.account_id, acc.balance, p_currency, p_amount, -p_amount, NULL, NULL,
                        NULL, NULL, 'house', 'withdrawal_holds',
                        jsonb_build_object('payment_id', p_id));
    INSERT INTO payment_transitions (payment_id, from_status, to_status, trigger)
    VALUES (p_id, NULL, 'requested', 'api');
    RETURN QUERY SELECT 'ok', p_id;
END
$$;

-- As in sql/004, and a payout whose outcome was unknown needs no attention once it is final.
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
           failure_code = coalesce(p_failure_code, failure_code),
           flagged = CASE WHEN flagged = 'payout_outcome_unknown'
                           AND p_to IN ('paid', 'failed', 'rejected') THEN NULL
                          ELSE flagged END
     WHERE id = p_id;
    INSERT INTO payment_transitions (payment_id, from_status, to_status, trigger, detail)
    VALUES (p_id, pay.status, p_to, p_trigger, p_detail);
    PERFORM operator_event(p_id);
    RETURN p_to;
END
$$;
