-- Rounds for operators (app/operator/rounds.py), keyset-paged newest first. Nothing is
-- indexed per round for them (sql/migrations/019): a player's rounds are read off the ledger's
-- ledger_by_player index, each round at its first posting (first_transaction); the stale rounds of every player
-- come from wallet_stale_rounds (the sweep's table and the latest minute).

-- name: player_rounds
-- By the round's first posting, newest first; the cursor is that posting's (created_at, id).
SELECT r.provider, r.player_id, r.round_id, r.game_id, wallet_round_state(r) AS state,
       wallet_round_stale(wallet_round_state(r), r.bets, r.cancelled_bets, r.created_at,
                          :age_seconds::integer) AS stale,
       r.bets, r.cancelled_bets, r.results, r.created_at, r.closed_at, r.closed_by,
       r.settled_action, p.created_at AS first_at, p.id AS first_id
  FROM ledger_transactions p
  JOIN rounds r ON r.provider = p.source AND r.player_id = p.player_id
               AND r.round_id = p.round_id
 WHERE p.player_id = :player_id
   AND p.round_id IS NOT NULL
   AND r.first_transaction = p.id
   AND (:provider::text IS NULL OR p.source = :provider)
   AND (:state::text IS NULL OR wallet_round_state(r) = :state)
   AND (NOT :stale_only::boolean
        OR wallet_round_stale(wallet_round_state(r), r.bets, r.cancelled_bets, r.created_at,
                              :age_seconds::integer))
   AND p.created_at <= coalesce(:cursor_at::timestamptz, 'infinity')
   AND (:cursor_at::timestamptz IS NULL OR (p.created_at, p.id) < (:cursor_at, :cursor_id::bigint))
 ORDER BY p.created_at DESC, p.id DESC
 LIMIT :limit;

-- name: stale_rounds
-- Every player's stale rounds, newest first by (created_at, provider, player_id, round_id).
SELECT r.provider, r.player_id, r.round_id, r.game_id, wallet_round_state(r) AS state, true AS stale,
       r.bets, r.cancelled_bets, r.results, r.created_at, r.closed_at, r.closed_by,
       r.settled_action
  FROM wallet_stale_rounds(:age_seconds::integer) s
  JOIN rounds r USING (provider, player_id, round_id)
 WHERE (:provider::text IS NULL OR r.provider = :provider)
   AND (:cursor_at::timestamptz IS NULL
        OR (r.created_at, r.provider, r.player_id, r.round_id)
           < (:cursor_at, :cursor_provider::text, :cursor_player::text, :cursor_round::text))
 ORDER BY r.created_at DESC, r.provider DESC, r.player_id DESC, r.round_id DESC
 LIMIT :limit;

-- name: get_round
SELECT provider, player_id, round_id, game_id, wallet_round_state(rounds) AS state,
       wallet_round_stale(wallet_round_state(rounds), bets, cancelled_bets, created_at,
                          :age_seconds::integer) AS stale,
       bets, cancelled_bets, results, created_at, closed_at, closed_by, settled_action
  FROM rounds
 WHERE provider = :provider AND player_id = :player_id AND round_id = :round_id;

-- name: round_postings
SELECT id, kind, external_id, amount, delta, balance_after, ref_external_id, result_kind,
       free_round_id, request_id, created_at
  FROM ledger_transactions
 WHERE id = ANY(wallet_round_transactions(:provider, :player_id, :round_id));

-- name: round_events
SELECT id, event, request_id, actor, reason, created_at
  FROM round_events
 WHERE provider = :provider AND player_id = :player_id AND round_id = :round_id
 ORDER BY id;

-- name: settle_round
SELECT wallet_settle_round(:provider, :player_id, :round_id, :action, :reason, :actor,
                           :request_id, :age_seconds::integer);

-- name: sweep_stale_rounds
SELECT wallet_sweep_stale(:age_seconds::integer);

-- name: stale_rounds_by_provider
-- The gauge, after a sweep: every provider, 0 when it has none (metrics.stale_rounds_counted).
SELECT p.code AS provider, count(s.round_id) AS stale
  FROM providers p
  LEFT JOIN wallet_stale_rounds(:age_seconds::integer) s ON s.provider = p.code
 GROUP BY p.code;
