-- Free-round grants of the operator API (app/operator/free_rounds.py). Each read answers the
-- grant's state at the statement's transaction time (free_round_state, sql/functions).

-- name: insert_free_round
-- The grant's currency is the player's: no row (and no grant) for an unknown player.
INSERT INTO free_rounds (player_id, provider, game_id, rounds, bet_value, currency, expires_at)
SELECT player_id, :provider, :game_id, :rounds, :bet_value, currency, :expires_at
  FROM players WHERE player_id = :player_id
RETURNING id;

-- name: free_round
SELECT id, player_id, provider, game_id, rounds, used, bet_value, currency, expires_at,
       withdrawn_at, created_at,
       free_round_state(rounds, used, expires_at, withdrawn_at, now()) AS state
  FROM free_rounds WHERE id = :id AND player_id = :player_id;

-- name: lock_free_round
-- The row lock a bet's `UPDATE free_rounds SET used = used + 1` takes too: a withdrawal and a bet
-- on one grant run one after the other.
SELECT id, player_id, provider, game_id, rounds, used, bet_value, currency, expires_at,
       withdrawn_at, created_at,
       free_round_state(rounds, used, expires_at, withdrawn_at, now()) AS state
  FROM free_rounds WHERE id = :id AND player_id = :player_id
   FOR UPDATE;

-- name: withdraw_free_round
UPDATE free_rounds SET withdrawn_at = now() WHERE id = :id AND withdrawn_at IS NULL;

-- name: player_free_rounds
-- Newest first, keyset-paged on the id (free_rounds_by_player).
SELECT id, player_id, provider, game_id, rounds, used, bet_value, currency, expires_at,
       withdrawn_at, created_at,
       free_round_state(rounds, used, expires_at, withdrawn_at, now()) AS state
  FROM free_rounds
 WHERE player_id = :player_id
   AND (:cursor::bigint IS NULL OR id < :cursor)
   AND (:state::text IS NULL
        OR free_round_state(rounds, used, expires_at, withdrawn_at, now()) = :state)
 ORDER BY id DESC
 LIMIT :limit;
