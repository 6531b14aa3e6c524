-- Payments functions: the payment state machine, withdrawals and the operator event outbox.
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- Record the event for a payment's current status ("deposit.succeeded", ...).
CREATE OR REPLACE FUNCTION operator_event(p_payment_id text) RETURNS void LANGUAGE plpgsql AS $$
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

-- Move a payment along one edge and move its money, atomically. Answers the new status, or NULL
-- when the edge is not allowed from the payment's current status (nothing changes then). A
-- payout whose outcome was unknown needs no attention once it is final.
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

-- Create a withdrawal and hold its funds in one transaction. Answers 'ok', 'duplicate' (same key:
-- the existing payment), 'idempotency_conflict', 'player_not_found', 'currency_mismatch' or
-- 'insufficient_funds'. The key is taken first: two players' requests with one key lock
-- different player rows, so without it both found no prior payment and one failed on the
-- unique key.
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

-- Why a payment waits for an operator, if it does: the answer's `attention`
-- (app/payments/models.py _attention mirrors it, and a test compares). A held withdrawal has no
-- flag, its status says it (models.HELD_FOR_REVIEW).
CREATE OR REPLACE FUNCTION payment_attention(p_kind text, p_status text, p_flagged text)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(p_flagged,
                    CASE WHEN p_kind = 'withdrawal' AND p_status = 'held'
                         THEN 'held_for_review' END)
$$;

-- Whether a payment with an attention reason is still open, as wallet_payments_attention counts
-- it: one not final yet (an operator approves, rejects or resolves it, or its PSP or the poller
-- moves it on: its state machine has an edge out of its status), or one final for less than a
-- day. Nothing in the wallet clears the flag of a final payment (a PSP event contradicting it, a
-- mismatch): the flag is its permanent record, and the day is long enough for
-- WalletPaymentsNeedAttention to fire and be handled with the PSP (docs/deployment.md). A final
-- payment's updated_at is when it became final or was flagged, whichever came last.
CREATE OR REPLACE FUNCTION payment_attention_open(
    p_kind text, p_status text, p_updated_at timestamptz
) RETURNS boolean LANGUAGE sql STABLE
AS $$
    SELECT p_updated_at > now() - interval '1 day'
        OR EXISTS (SELECT 1 FROM payment_state_edges
                    WHERE kind = p_kind AND from_status = p_status)
$$;
