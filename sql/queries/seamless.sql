-- name: active_provider_keys
-- Current key first, so a request without X-Key-Id is tried with the newest key first.
SELECT key_id, secret, state
  FROM provider_keys
 WHERE provider = $1 AND state IN ('current', 'previous')
 ORDER BY state = 'current' DESC;

-- name: seamless_balance
-- Provider, player: player_not_found for a player out of the provider's scope (sql/010).
SELECT * FROM seamless_balance($1, $2);

-- name: seamless_batch
-- The events, a seamless_event[] (app.seamless.batch.Posting rows); the lock timeout in ms (0:
-- none) and the replay window in seconds.
SELECT * FROM seamless_batch($1, $2, $3);

-- name: prune_seamless_requests
-- Durable replay records past the replay window, a bounded number at a time.
DELETE FROM seamless_requests
 WHERE ctid = ANY (ARRAY(SELECT ctid FROM seamless_requests
                          WHERE created_at < now() - make_interval(secs => $1)
                          LIMIT $2));
