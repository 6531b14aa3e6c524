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
-- Arrays, one element per event: event, provider, player, transaction_id, ref_transaction_id,
-- round, game, amount, currency, token hash, round_closed, request_id (sql/007); then the lock
-- timeout in ms (0: none).
SELECT * FROM seamless_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);
