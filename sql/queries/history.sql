-- Lists are keyset-paged, newest first: the cursor is the last row's key, never an offset.
-- Optional filters are NULL when not given.

-- name: player_transactions
SELECT id, kind, source, external_id, round_id, game_id, ref_external_id, amount, delta,
       balance_after, currency, request_id, metadata, created_at
  FROM ledger_transactions
 WHERE player_id = $1
   AND ($2::timestamptz IS NULL OR created_at >= $2)
   AND ($3::timestamptz IS NULL OR created_at < $3)
   AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::bigint))
 ORDER BY created_at DESC, id DESC
 LIMIT $6;

-- name: seamless_calls
SELECT id, provider, event, request_id, player_id, transaction_id, code, reason,
       wallet_transaction_id, duplicate, replayed, latency_us, created_at
  FROM seamless_calls
 WHERE ($1::text IS NULL OR provider = $1)
   AND ($2::text IS NULL OR event = $2)
   AND ($3::text IS NULL OR code = $3)
   AND ($4::text IS NULL OR player_id = $4)
   AND ($5::timestamptz IS NULL OR created_at >= $5)
   AND ($6::timestamptz IS NULL OR created_at < $6)
   AND ($7::bigint IS NULL OR id < $7)
   AND (NOT $8::boolean OR code IN ('R1', 'R2', 'R3'))
 ORDER BY id DESC
 LIMIT $9;

-- name: audit_entries
SELECT id, actor, action, target, before, after, request_id, created_at
  FROM audit_log
 WHERE ($1::text IS NULL OR actor = $1)
   AND ($2::text IS NULL OR action = $2)
   AND ($3::text IS NULL OR target = $3)
   AND ($4::timestamptz IS NULL OR created_at >= $4)
   AND ($5::timestamptz IS NULL OR created_at < $5)
   AND ($6::bigint IS NULL OR id < $6)
 ORDER BY id DESC
 LIMIT $7;

-- name: players_page
SELECT p.player_id, p.currency, p.status, p.kyc_tier, a.balance, p.created_at, p.updated_at
  FROM players p JOIN accounts a ON a.id = p.account_id
 WHERE ($1::text IS NULL OR p.status = $1)
   AND ($2::text IS NULL OR p.player_id > $2)
 ORDER BY p.player_id
 LIMIT $3;

-- name: providers_page
SELECT code, name, created_at FROM providers
 WHERE ($1::text IS NULL OR code > $1)
 ORDER BY code
 LIMIT $2;

-- name: insert_audit
INSERT INTO audit_log (actor, action, target, before, after, request_id)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: insert_api_key
INSERT INTO api_keys (id, key_hash, role, name, created_by) VALUES ($1, $2, $3, $4, $5)
RETURNING id, role, name, created_by, created_at, revoked_at;

-- name: api_key_by_hash
SELECT id, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
RETURNING id, role, name, created_by, created_at, revoked_at;

-- name: api_keys_page
SELECT id, role, name, created_by, created_at, revoked_at FROM api_keys
 WHERE ($1::text IS NULL OR id > $1)
 ORDER BY id
 LIMIT $2;

-- name: lock_player_account
-- The player's account row lock (sql/002 wallet_lock_player), the one every money event of the
-- player takes first; the account id, NULL for an unknown player.
SELECT account_id FROM wallet_lock_player($1);

-- name: set_limit
SELECT * FROM wallet_set_limit($1, $2, $3, $4, make_interval(secs => $5));

-- name: player_limit_rows
SELECT kind, period, wallet_limit_in_force(amount, next_amount, next_from) AS amount,
       next_amount, next_from
  FROM player_limits
 WHERE player_id = $1
 ORDER BY kind, period;

-- name: daily_report
-- Per provider and currency for one UTC day. Wins are results plus corrections; refunds are the
-- cancels that moved money; GGR (gross gaming revenue) = bets - refunds - wins.
SELECT source AS provider, currency,
       count(*) FILTER (WHERE kind = 'bet') AS bet_count,
       coalesce(sum(-delta) FILTER (WHERE kind = 'bet'), 0)::bigint AS bet_sum,
       count(*) FILTER (WHERE kind = 'result') AS result_count,
       coalesce(sum(delta) FILTER (WHERE kind IN ('result', 'result_change')), 0)::bigint
           AS win_sum,
       count(*) FILTER (WHERE kind = 'cancel' AND delta > 0) AS cancel_count,
       coalesce(sum(delta) FILTER (WHERE kind = 'cancel'), 0)::bigint AS cancel_sum,
       (-coalesce(sum(delta), 0))::bigint AS ggr
  FROM ledger_transactions
 WHERE kind <> 'adjustment' AND created_at >= $1 AND created_at < $2
 GROUP BY source, currency
 ORDER BY source, currency;

-- name: statement_totals
SELECT kind, count(*) AS count, coalesce(sum(delta), 0)::bigint AS total
  FROM ledger_transactions
 WHERE player_id = $1 AND created_at >= $2 AND created_at < $3
 GROUP BY kind
 ORDER BY kind;

-- name: balance_before
-- The player's balance just before a moment: the last posting's balance_after, or 0.
SELECT coalesce((SELECT balance_after FROM ledger_transactions
                  WHERE player_id = $1 AND created_at < $2
                  ORDER BY created_at DESC, id DESC LIMIT 1), 0)::bigint;
