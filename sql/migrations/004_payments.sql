-- Payments: deposits and withdrawals through PSPs.
--
-- The state machines live here, in payment_state_edges, and payment_transition() refuses any
-- edge that is not listed, whoever asks. A status change and the money it moves are one
-- transaction:
--   deposit    -> succeeded        credit the player (from the PSP's clearing account)
--   withdrawal    requested        hold: the player's funds move to the withdrawal-holds account
--   withdrawal -> failed/rejected  release the hold back to the player
--   withdrawal -> paid             settle the hold to the PSP's clearing account

ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN (
    'bet', 'cancel', 'result', 'result_change', 'adjustment',
    'deposit', 'withdrawal_hold', 'withdrawal_release', 'withdrawal_settle'));

CREATE TABLE payment_state_edges (
    kind         text NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    from_status  text NOT NULL,
    to_status    text NOT NULL,
    PRIMARY KEY (kind, from_status, to_status)
);
INSERT INTO payment_state_edges (kind, from_status, to_status) VALUES
    ('deposit', 'awaiting_method', 'processing'),
    ('deposit', 'awaiting_method', 'succeeded'),
    ('deposit', 'awaiting_method', 'failed'),
    ('deposit', 'awaiting_method', 'expired'),
    ('deposit', 'processing', 'succeeded'),
    ('deposit', 'processing', 'failed'),
    ('deposit', 'processing', 'expired'),
    ('withdrawal', 'requested', 'held'),
    ('withdrawal', 'requested', 'approved'),
    ('withdrawal', 'requested', 'rejected'),
    ('withdrawal', 'held', 'approved'),
    ('withdrawal', 'held', 'rejected'),
    ('withdrawal', 'approved', 'processing'),
    ('withdrawal', 'approved', 'failed'),
    -- The PSP's answer can overtake our own record of having sent the payout.
    ('withdrawal', 'approved', 'paid'),
    ('withdrawal', 'processing', 'paid'),
    ('withdrawal', 'processing', 'failed');

CREATE TABLE payments (
    id               text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    player_id        text NOT NULL REFERENCES players (player_id),
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    method           text NOT NULL,
    reference        text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL,
    -- Idempotency-Key of the creating request, with a hash of its body: the payment row itself
    -- is the idempotency record, so a retry after a crash finds the payment, never a new one.
    idempotency_key  text NOT NULL,
    request_hash     bytea NOT NULL,
    response         jsonb,          -- the first answer, once it was complete
    psp              text,
    psp_payment_id   text,
    redirect_url     text,
    deep_link        text,
    failure_code     text,
    flagged          text,           -- why a PSP event for it was refused, for investigation
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    UNIQUE (kind, idempotency_key),
    UNIQUE (psp, psp_payment_id)
);
CREATE INDEX payments_by_player ON payments (player_id, created_at);
CREATE INDEX payments_open ON payments (expires_at)
    WHERE status IN ('awaiting_method', 'processing', 'approved');

-- Every transition with what triggered it. Append-only.
CREATE TABLE payment_transitions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id   text NOT NULL REFERENCES payments (id),
    from_status  text,
    to_status    text NOT NULL,
    trigger      text NOT NULL CHECK (trigger IN ('api', 'operator', 'psp_webhook', 'psp_poll',
                                                  'psp_response', 'expiry')),
    detail       jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX payment_transitions_by_payment ON payment_transitions (payment_id, id);
CREATE TRIGGER payment_transitions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON payment_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Each PSP event id is applied once.
CREATE TABLE psp_events (
    psp          text NOT NULL,
    event_id     text NOT NULL,
    payment_id   text,
    type         text NOT NULL,
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (psp, event_id)
);

-- Events to the operator's platform (deposit.*, withdrawal.*): a transactional outbox. Each event
-- is written in the same transaction as the status change it reports, so none is lost and none
-- is invented; app/payments/outbox.py delivers them, signed, with backoff.
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

-- A posting between two house accounts on behalf of a player (settling a withdrawal hold): the
-- player's balance does not move, so it has entries but no player entry.
CREATE FUNCTION wallet_post_house(
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

-- Move a payment along one edge and move its money, atomically. Answers the new status, or NULL
-- when the edge is not allowed from the payment's current status (nothing changes then).
CREATE FUNCTION payment_transition(
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

-- Create a withdrawal and hold its funds in one transaction. Answers 'ok', 'duplicate' (same key:
-- the existing payment), 'idempotency_conflict', 'player_not_found', 'currency_mismatch' or
-- 'insufficient_funds'.
CREATE FUNCTION payment_create_withdrawal(
    p_id text, p_player text, p_amount bigint, p_currency text, p_method text, p_reference text,
    p_metadata jsonb, p_key text, p_hash bytea, p_expires_at timestamptz
) RETURNS TABLE (outcome text, payment_id text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    acc wallet_player := wallet_lock_player(p_player);
    prior record;
BEGIN
    -- Under the player's row lock, so two deliveries of one key cannot both hold funds.
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
