-- name: active_provider_keys
-- Current key first, so a request without X-Key-Id is tried with the newest key first.
SELECT key_id, secret, state
  FROM provider_keys
 WHERE provider = :provider AND state IN ('current', 'previous')
 ORDER BY state = 'current' DESC;

-- name: seamless_balance
-- player_not_found for a player out of the provider's scope (sql/functions/seamless.sql).
SELECT * FROM seamless_balance(:provider, :player_id);

-- name: seamless_batch
-- The events, a seamless_event[] (app.seamless.batch.Posting rows); the lock timeout in ms (0:
-- none) and the replay window in seconds.
SELECT * FROM seamless_batch(:events, :lock_timeout_ms, :replay_seconds);

-- name: prune_seamless_requests
-- Durable replay records past the replay window, a bounded number at a time.
DELETE FROM seamless_requests
 WHERE ctid = ANY (ARRAY(SELECT ctid FROM seamless_requests
                          WHERE created_at < now() - make_interval(secs => :replay_seconds)
                          LIMIT :limit));
