-- Lists are keyset-paged, newest first: the cursor is the last row's key, never an offset.
-- Optional filters are NULL when not given.

-- name: player_transactions
SELECT id, kind, source, external_id, round_id, game_id, ref_external_id, result_kind,
       free_round_id, amount, delta, balance_after, currency, request_id, metadata, created_at
  FROM ledger_transactions
 WHERE player_id = :player_id
   AND (:since::timestamptz IS NULL OR created_at >= :since)
   AND (:until::timestamptz IS NULL OR created_at < :until)
   AND (:cursor_at::timestamptz IS NULL OR (created_at, id) < (:cursor_at, :cursor_id::bigint))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: seamless_calls
SELECT id, provider, event, request_id, player_id, transaction_id, code, reason,
       wallet_transaction_id, duplicate, replayed, latency_us, created_at
  FROM seamless_calls
 WHERE (:provider::text IS NULL OR provider = :provider)
   AND (:event::text IS NULL OR event = :event)
   AND (:code::text IS NULL OR code = :code)
   AND (:reason::text IS NULL OR reason = :reason)
   AND (:player_id::text IS NULL OR player_id = :player_id)
   AND (:since::timestamptz IS NULL OR created_at >= :since)
   AND (:until::timestamptz IS NULL OR created_at < :until)
   AND (:cursor_id::bigint IS NULL OR id < :cursor_id)
   AND (NOT :failures_only::boolean OR code IN ('R1', 'R2', 'R3'))
 ORDER BY id DESC
 LIMIT :limit;

-- name: audit_entries
SELECT id, actor, action, target, before, after, request_id, created_at
  FROM audit_log
 WHERE (:actor::text IS NULL OR actor = :actor)
   AND (:action::text IS NULL OR action = :action)
   AND (:target::text IS NULL OR target = :target)
   AND (:since::timestamptz IS NULL OR created_at >= :since)
   AND (:until::timestamptz IS NULL OR created_at < :until)
   AND (:cursor_id::bigint IS NULL OR id < :cursor_id)
 ORDER BY id DESC
 LIMIT :limit;

-- name: players_page
SELECT p.player_id, p.currency, p.status, p.kyc_tier, a.balance, p.created_at, p.updated_at
  FROM players p JOIN accounts a ON a.id = p.account_id
 WHERE (:status::text IS NULL OR p.status = :status)
   AND (:cursor::text IS NULL OR p.player_id > :cursor)
 ORDER BY p.player_id
 LIMIT :limit;

-- name: providers_page
SELECT code, name, created_at FROM providers
 WHERE (:cursor::text IS NULL OR code > :cursor)
 ORDER BY code
 LIMIT :limit;

-- name: insert_audit
INSERT INTO audit_log (actor, action, target, before, after, request_id)
VALUES (:actor, :action, :target, :before, :after, :request_id);

-- name: insert_api_key
INSERT INTO api_keys (id, key_hash, role, name, created_by)
VALUES (:id, :key_hash, :role, :name, :created_by)
RETURNING id, role, name, created_by, created_at, revoked_at;

-- name: api_key_by_hash
SELECT id, role FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL
RETURNING id, role, name, created_by, created_at, revoked_at;

-- name: api_keys_page
SELECT id, role, name, created_by, created_at, revoked_at FROM api_keys
 WHERE (:cursor::text IS NULL OR id > :cursor)
 ORDER BY id
 LIMIT :limit;

-- name: lock_player_account
-- The player's account row lock (wallet_lock_player, sql/functions/ledger.sql), the one every
-- money event of the player takes first; the account id, NULL for an unknown player.
SELECT account_id FROM wallet_lock_player(:player_id);

-- name: set_limit
SELECT * FROM wallet_set_limit(:player_id, :kind, :period, :amount,
                              make_interval(secs => :cooling_off_seconds));

-- name: player_limit_rows
SELECT kind, period, wallet_limit_in_force(amount, next_amount, next_from) AS amount,
       next_amount, next_from
  FROM player_limits
 WHERE player_id = :player_id
 ORDER BY kind, period;

-- name: daily_report
-- Per provider, currency and kind of game posting for one UTC day, in one snapshot;
-- app/operator/reports.py adds the groups up into the report's rows. A result and its
-- corrections are grouped by the result's kind of credit (NULL, on rows of before the kinds:
-- a win), a bet by whether it was of a free round. Adjustments and payments are no game's.
SELECT source AS provider, currency, kind,
       CASE WHEN kind IN ('result', 'result_change') THEN coalesce(result_kind, 'win') END
           AS result_kind,
       free_round_id IS NOT NULL AS free_round,
       count(*) AS count,
       count(*) FILTER (WHERE delta <> 0) AS moved,
       coalesce(sum(delta), 0)::bigint AS total
  FROM ledger_transactions
 WHERE kind IN ('bet', 'cancel', 'result', 'result_change', 'promo_win')
   AND created_at >= :since AND created_at < :until
 GROUP BY 1, 2, 3, 4, 5
 ORDER BY 1, 2;

-- name: statement_totals
-- The player's postings over a period, grouped by kind; the results and their corrections also
-- by the result's kind of credit (NULL before the kinds: a win), the bets by free round or not.
SELECT kind,
       CASE WHEN kind IN ('result', 'result_change') THEN coalesce(result_kind, 'win') END
           AS result_kind,
       kind = 'bet' AND free_round_id IS NOT NULL AS free_round,
       count(*) AS count, coalesce(sum(delta), 0)::bigint AS total
  FROM ledger_transactions
 WHERE player_id = :player_id AND created_at >= :since AND created_at < :until
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3;

-- name: balance_before
-- The player's balance just before a moment: the last posting's balance_after, or 0.
SELECT coalesce((SELECT balance_after FROM ledger_transactions
                  WHERE player_id = :player_id AND created_at < :at
                  ORDER BY created_at DESC, id DESC LIMIT 1), 0)::bigint;

-- name: player_sessions_page
-- A player's sessions, newest first; never the token, which is not stored (only its hash,
-- here the page's tie-breaker, in hex).
SELECT provider, game_id, created_at, expires_at, ended_at, encode(token_hash, 'hex') AS key
  FROM sessions
 WHERE player_id = :player_id
   AND (:cursor_at::timestamptz IS NULL
        OR (created_at, token_hash) < (:cursor_at, decode(:cursor_key::text, 'hex')))
 ORDER BY created_at DESC, token_hash DESC
 LIMIT :limit;
