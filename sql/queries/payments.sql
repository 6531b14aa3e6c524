-- name: insert_deposit
-- The payment row is the idempotency record: a second request with the key finds it.
INSERT INTO payments (id, kind, player_id, amount, currency, method, reference, metadata, status,
                      idempotency_key, request_hash, expires_at)
VALUES ($1, 'deposit', $2, $3, $4, $5, $6, $7, 'awaiting_method', $8, $9, $10)
ON CONFLICT (kind, idempotency_key) DO NOTHING
RETURNING id;

-- name: payment_by_key
SELECT * FROM payments WHERE kind = $1 AND idempotency_key = $2;

-- name: payment_by_id
SELECT * FROM payments WHERE id = $1;

-- name: record_initiation
UPDATE payments SET psp = $2, psp_payment_id = $3, redirect_url = $4, deep_link = $5,
       updated_at = now()
 WHERE id = $1;

-- name: store_response
UPDATE payments SET response = $2 WHERE id = $1 AND response IS NULL;

-- name: transition
SELECT payment_transition($1, $2, $3, $4, $5);

-- name: create_withdrawal
SELECT * FROM payment_create_withdrawal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: record_psp_event
INSERT INTO psp_events (psp, event_id, payment_id, type, outcome) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (psp, event_id) DO NOTHING
RETURNING event_id;

-- name: flag_payment
UPDATE payments SET flagged = $2, updated_at = now() WHERE id = $1;

-- name: deposits_in_window
-- Deposits that count towards a deposit limit: succeeded, or still under way.
SELECT coalesce(sum(amount), 0)::bigint FROM payments
 WHERE player_id = $1 AND kind = 'deposit' AND created_at >= wallet_window_start($2)
   AND status IN ('awaiting_method', 'processing', 'succeeded');

-- name: deposit_limits_in_force
SELECT period, wallet_limit_in_force(amount, next_amount, next_from) AS amount
  FROM player_limits WHERE player_id = $1 AND kind = 'deposit';

-- name: payments_to_poll
-- Claim open payments the PSP has had a while to report on, or past their expiry, by stamping
-- them: another worker's poll skips them (SKIP LOCKED now, the fresh stamp afterwards). Creations
-- still without an answer are left to their Idempotency-Key take-over until they expire.
UPDATE payments SET updated_at = now()
 WHERE id IN (SELECT id FROM payments
               WHERE status IN ('awaiting_method', 'processing', 'approved')
                 AND (response IS NOT NULL OR expires_at < now())
                 AND (updated_at < now() - make_interval(secs => $1) OR expires_at < now())
               ORDER BY updated_at
               LIMIT $2
                 FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: operator_event
SELECT operator_event($1);

-- name: claim_due_events
-- Lease due events for delivery (another worker skips them until the lease ends).
UPDATE operator_events SET next_attempt_at = now() + make_interval(secs => $2)
 WHERE id IN (SELECT id FROM operator_events
               WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
               ORDER BY next_attempt_at
               LIMIT $1
                 FOR UPDATE SKIP LOCKED)
RETURNING id, type, payload, attempts, replays;

-- name: event_delivered
UPDATE operator_events SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
 WHERE id = $1;

-- name: event_failed
-- The next attempt after $3 seconds, or dead letter ($3 NULL).
UPDATE operator_events
   SET attempts = attempts + 1, last_error = $2,
       next_attempt_at = CASE WHEN $3::float8 IS NULL THEN next_attempt_at
                              ELSE now() + make_interval(secs => $3::float8) END,
       dead_at = CASE WHEN $3::float8 IS NULL THEN now() END
 WHERE id = $1;

-- name: replay_event
UPDATE operator_events
   SET delivered_at = NULL, dead_at = NULL, next_attempt_at = now(), replays = replays + 1
 WHERE id = $1
RETURNING id;

-- name: events_page
SELECT id, type, payment_id, payload, created_at, attempts, next_attempt_at, delivered_at,
       dead_at, last_error, replays
  FROM operator_events
 WHERE ($1::text IS NULL
        OR ($1 = 'delivered' AND delivered_at IS NOT NULL)
        OR ($1 = 'dead' AND dead_at IS NOT NULL)
        OR ($1 = 'pending' AND delivered_at IS NULL AND dead_at IS NULL))
   AND ($2::text IS NULL OR payment_id = $2)
   AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::text))
 ORDER BY created_at DESC, id DESC
 LIMIT $5;

-- name: event_by_id
SELECT id, type, payment_id, payload, created_at, attempts, next_attempt_at, delivered_at,
       dead_at, last_error, replays
  FROM operator_events WHERE id = $1;

-- name: settled_payments
-- Payments at one PSP that moved money in a time range, dated by that transition.
SELECT p.id, p.kind, p.amount, p.currency, p.psp_payment_id, t.created_at AS settled_at
  FROM payments p
  JOIN payment_transitions t ON t.payment_id = p.id
 WHERE p.psp = $1
   AND t.to_status IN ('succeeded', 'paid')
   AND t.created_at >= $2 AND t.created_at < $3;

-- name: player_kyc_tier
SELECT kyc_tier FROM players WHERE player_id = $1;

-- name: route_payout
-- Fix the payout's route before its request leaves; refused (no row) once another route has it.
UPDATE payments SET psp = $2, sent_at = coalesce(sent_at, now()), updated_at = now()
 WHERE id = $1 AND (psp IS NULL OR psp = $2)
RETURNING id;

-- name: unroute_payout
-- The route provably did not take the payout (no connection, 429): another may.
UPDATE payments SET psp = NULL, sent_at = NULL WHERE id = $1 AND psp = $2 AND psp_payment_id IS NULL;

-- name: found_at_psp
-- The PSP's payment id, learnt by asking the PSP for our reference.
UPDATE payments SET psp_payment_id = $2, updated_at = now()
 WHERE id = $1 AND psp_payment_id IS NULL;

-- name: try_start_lease
-- Held by the one start of a payment talking to its PSP; released at the end, or by the server
-- when that session ends (a crashed worker), so no timer decides when a start is over.
SELECT pg_try_advisory_lock(hashtextextended('payment-start|' || $1, 0));

-- name: lock_start_lease
-- The same lock for the rest of a transaction (an operator's resolve): refused while a start
-- holds it, and holding off a new start until the transaction ends.
SELECT pg_try_advisory_xact_lock(hashtextextended('payment-start|' || $1, 0));

-- name: end_start_lease
SELECT pg_advisory_unlock(hashtextextended('payment-start|' || $1, 0));

-- name: withdrawals_needing_attention
SELECT * FROM payments
 WHERE kind = 'withdrawal' AND (flagged IS NOT NULL OR status = 'held')
   AND ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2::text))
 ORDER BY created_at DESC, id DESC
 LIMIT $3;

-- name: operator_request
SELECT request_hash, status, response FROM operator_requests WHERE idempotency_key = $1;

-- name: claim_operator_request
-- Waits for a racing request with the key to end; no row when that one committed its answer.
INSERT INTO operator_requests (idempotency_key, request_hash, status, response)
VALUES ($1, $2, 0, 'null')
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- name: answer_operator_request
UPDATE operator_requests SET status = $2, response = $3 WHERE idempotency_key = $1;
