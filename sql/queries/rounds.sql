-- Rounds for operators (app/operator/rounds.py). A listing is newest first by
-- (created_at, provider, player_id, round_id), keyset-paged on that key; each shape of filter
-- has its own query so that each reads its index: a player's rounds rounds_by_player, the
-- rounds not closed (open, stale, cancelled) rounds_open. `created_at <= coalesce(...)` repeats
-- the cursor's bound as a plain range, which the index can take.

-- name: player_rounds
SELECT provider, player_id, round_id, game_id, state,
       wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer) AS stale,
       bets, cancelled_bets, results, created_at, closed_at, closed_by, settled_action
  FROM rounds
 WHERE player_id = :player_id
   AND (:provider::text IS NULL OR provider = :provider)
   AND (:state::text IS NULL OR state = :state)
   AND (NOT :stale_only::boolean
        OR wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer))
   AND created_at <= coalesce(:cursor_at::timestamptz, 'infinity')
   AND (:cursor_at::timestamptz IS NULL
        OR (created_at, provider, player_id, round_id)
           < (:cursor_at, :cursor_provider::text, :cursor_player::text, :cursor_round::text))
 ORDER BY created_at DESC, provider DESC, player_id DESC, round_id DESC
 LIMIT :limit;

-- name: unclosed_rounds
-- :state is 'open' (with :stale_only for the stale ones) or 'cancelled': both are rows with no
-- closed_at, the rows of the rounds_open index.
SELECT provider, player_id, round_id, game_id, state,
       wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer) AS stale,
       bets, cancelled_bets, results, created_at, closed_at, closed_by, settled_action
  FROM rounds
 WHERE closed_at IS NULL
   AND state = :state
   AND (:provider::text IS NULL OR provider = :provider)
   AND (NOT :stale_only::boolean
        OR wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer))
   AND created_at < CASE WHEN :stale_only
                         THEN now() - make_interval(secs => :age_seconds::integer)
                         ELSE 'infinity' END
   AND created_at <= coalesce(:cursor_at::timestamptz, 'infinity')
   AND (:cursor_at::timestamptz IS NULL
        OR (created_at, provider, player_id, round_id)
           < (:cursor_at, :cursor_provider::text, :cursor_player::text, :cursor_round::text))
 ORDER BY created_at DESC, provider DESC, player_id DESC, round_id DESC
 LIMIT :limit;

-- name: get_round
SELECT provider, player_id, round_id, game_id, state,
       wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer) AS stale,
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

-- name: stale_rounds_by_provider
-- The gauge: one range of the rounds_open index, older than the age.
SELECT provider, count(*) AS stale
  FROM rounds
 WHERE closed_at IS NULL
   AND created_at < now() - make_interval(secs => :age_seconds::integer)
   AND wallet_round_stale(state, bets, cancelled_bets, created_at, :age_seconds::integer)
 GROUP BY provider;
