-- name: insert_deposit
-- The payment row is the idempotency record: a second request with the key finds it.
INSERT INTO payments (id, kind, player_id, amount, currency, method, reference, metadata, status,
                      idempotency_key, request_hash, expires_at)
VALUES (:id, 'deposit', :player_id, :amount, :currency, :method, :reference, :metadata,
        'awaiting_method', :idempotency_key, :request_hash, :expires_at)
ON CONFLICT (kind, idempotency_key) DO NOTHING
RETURNING id;

-- name: payment_by_key
SELECT * FROM payments WHERE kind = :kind AND idempotency_key = :idempotency_key;

-- name: payment_by_id
SELECT * FROM payments WHERE id = :id;

-- name: record_initiation
UPDATE payments SET psp = :psp, psp_payment_id = :psp_payment_id, redirect_url = :redirect_url,
       deep_link = :deep_link, updated_at = now()
 WHERE id = :id;

-- name: store_response
UPDATE payments SET response = :response WHERE id = :id AND response IS NULL;

-- name: transition
SELECT payment_transition(:id, :to_status, :trigger, :detail, :failure_code);

-- name: create_withdrawal
SELECT * FROM payment_create_withdrawal(:id, :player_id, :amount, :currency, :method, :reference,
                                        :metadata, :idempotency_key, :request_hash, :expires_at);

-- name: record_psp_event
INSERT INTO psp_events (psp, event_id, payment_id, type, outcome)
VALUES (:psp, :event_id, :payment_id, :type, :outcome)
ON CONFLICT (psp, event_id) DO NOTHING
RETURNING event_id;

-- name: flag_payment
UPDATE payments SET flagged = :flagged, updated_at = now() WHERE id = :id;

-- name: deposits_in_window
-- Deposits that count towards a deposit limit: succeeded, or still under way.
SELECT coalesce(sum(amount), 0)::bigint FROM payments
 WHERE player_id = :player_id AND kind = 'deposit' AND created_at >= wallet_window_start(:period)
   AND status IN ('awaiting_method', 'processing', 'succeeded');

-- name: deposit_limits_in_force
SELECT period, wallet_limit_in_force(amount, next_amount, next_from) AS amount
  FROM player_limits WHERE player_id = :player_id AND kind = 'deposit';

-- name: payments_to_poll
-- Claim open payments the PSP has had a while to report on, or past their expiry, by stamping
-- them: another worker's poll skips them (SKIP LOCKED now, the fresh stamp afterwards). Creations
-- still without an answer are left to their Idempotency-Key take-over until they expire.
UPDATE payments SET updated_at = now()
 WHERE id IN (SELECT id FROM payments
               WHERE status IN ('awaiting_method', 'processing', 'approved')
                 AND (response IS NOT NULL OR expires_at < now())
                 AND (updated_at < now() - make_interval(secs => :quiet_seconds)
                      OR expires_at < now())
               ORDER BY updated_at
               LIMIT :limit
                 FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: operator_event
SELECT operator_event(:payment_id);

-- name: claim_due_events
-- Lease due events for delivery (another worker skips them until the lease ends).
UPDATE operator_events SET next_attempt_at = now() + make_interval(secs => :lease_seconds)
 WHERE id IN (SELECT id FROM operator_events
               WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
               ORDER BY next_attempt_at
               LIMIT :limit
                 FOR UPDATE SKIP LOCKED)
RETURNING id, type, payload, attempts, replays;

-- name: event_delivered
UPDATE operator_events SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
 WHERE id = :id;

-- name: event_failed
-- The next attempt after :retry_seconds seconds, or dead letter (:retry_seconds NULL).
UPDATE operator_events
   SET attempts = attempts + 1, last_error = :error,
       next_attempt_at = CASE WHEN :retry_seconds::float8 IS NULL THEN next_attempt_at
                              ELSE now() + make_interval(secs => :retry_seconds::float8) END,
       dead_at = CASE WHEN :retry_seconds::float8 IS NULL THEN now() END
 WHERE id = :id;

-- name: replay_event
UPDATE operator_events
   SET delivered_at = NULL, dead_at = NULL, next_attempt_at = now(), replays = replays + 1
 WHERE id = :id
RETURNING id;

-- name: events_page
SELECT id, type, payment_id, payload, created_at, attempts, next_attempt_at, delivered_at,
       dead_at, last_error, replays
  FROM operator_events
 WHERE (:status::text IS NULL
        OR (:status = 'delivered' AND delivered_at IS NOT NULL)
        OR (:status = 'dead' AND dead_at IS NOT NULL)
        OR (:status = 'pending' AND delivered_at IS NULL AND dead_at IS NULL))
   AND (:payment_id::text IS NULL OR payment_id = :payment_id)
   AND (:cursor_at::timestamptz IS NULL OR (created_at, id) < (:cursor_at, :cursor_id::text))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: event_by_id
SELECT id, type, payment_id, payload, created_at, attempts, next_attempt_at, delivered_at,
       dead_at, last_error, replays
  FROM operator_events WHERE id = :id;

-- name: settled_payments
-- Payments at one PSP that moved money in a time range, dated by that transition.
SELECT p.id, p.kind, p.amount, p.currency, p.psp_payment_id, t.created_at AS settled_at
  FROM payments p
  JOIN payment_transitions t ON t.payment_id = p.id
 WHERE p.psp = :psp
   AND t.to_status IN ('succeeded', 'paid')
   AND t.created_at >= :since AND t.created_at < :until;

-- name: player_kyc_tier
SELECT kyc_tier FROM players WHERE player_id = :player_id;

-- name: route_payout
-- Fix the payout's route before its request leaves; refused (no row) once another route has it.
UPDATE payments SET psp = :psp, sent_at = coalesce(sent_at, now()), updated_at = now()
 WHERE id = :id AND (psp IS NULL OR psp = :psp)
RETURNING id;

-- name: unroute_payout
-- The route provably did not take the payout (no connection, 429): another may.
UPDATE payments SET psp = NULL, sent_at = NULL
 WHERE id = :id AND psp = :psp AND psp_payment_id IS NULL;

-- name: found_at_psp
-- The PSP's payment id, learnt by asking the PSP for our reference.
UPDATE payments SET psp_payment_id = :psp_payment_id, updated_at = now()
 WHERE id = :id AND psp_payment_id IS NULL;

-- name: try_start_lease
-- Held by the one start of a payment talking to its PSP; released at the end, or by the server
-- when that session ends (a crashed worker), so no timer decides when a start is over.
SELECT pg_try_advisory_lock(hashtextextended('payment-start|' || :payment_id, 0));

-- name: lock_start_lease
-- The same lock for the rest of a transaction (an operator's resolve): refused while a start
-- holds it, and holding off a new start until the transaction ends.
SELECT pg_try_advisory_xact_lock(hashtextextended('payment-start|' || :payment_id, 0));

-- name: end_start_lease
SELECT pg_advisory_unlock(hashtextextended('payment-start|' || :payment_id, 0));

-- name: payments_needing_attention
-- Every payment of :kind that payment_attention names, open or not (the partial index's
-- predicate; only withdrawals are ever held).
SELECT * FROM payments
 WHERE kind = :kind AND (flagged IS NOT NULL OR status = 'held')
   AND (:cursor_at::timestamptz IS NULL OR (created_at, id) < (:cursor_at, :cursor_id::text))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: operator_request
SELECT request_hash, status, response FROM operator_requests
 WHERE idempotency_key = :idempotency_key;

-- name: claim_operator_request
-- Waits for a racing request with the key to end; no row when that one committed its answer.
INSERT INTO operator_requests (idempotency_key, request_hash, status, response)
VALUES (:idempotency_key, :request_hash, 0, 'null')
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- name: answer_operator_request
UPDATE operator_requests SET status = :status, response = :response
 WHERE idempotency_key = :idempotency_key;

-- name: outbox_counts
-- For wallet_outbox_events: undelivered events, due or waiting to retry, and dead letters. Each
-- count reads its partial index (operator_events_due, operator_events_dead), not the table.
SELECT (SELECT count(*) FROM operator_events WHERE delivered_at IS NULL AND dead_at IS NULL)
           AS pending,
       (SELECT count(*) FROM operator_events WHERE dead_at IS NOT NULL) AS dead;

-- name: attention_counts
-- For wallet_payments_attention: the open items payment_attention names, by kind and reason
-- (the partial index's predicate selects the rows it names).
SELECT kind, payment_attention(kind, status, flagged) AS attention, count(*) AS payments
  FROM payments
 WHERE (flagged IS NOT NULL OR status = 'held')
   AND payment_attention_open(kind, status, updated_at)
 GROUP BY 1, 2;
