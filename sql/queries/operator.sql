-- name: insert_provider
INSERT INTO providers (code, name) VALUES (:code, :name)
ON CONFLICT (code) DO NOTHING
RETURNING code, name, created_at;

-- name: lock_provider
SELECT code FROM providers WHERE code = :code FOR UPDATE;

-- name: retire_previous_key
UPDATE provider_keys SET state = 'retired' WHERE provider = :provider AND state = 'previous';

-- name: demote_current_key
UPDATE provider_keys SET state = 'previous' WHERE provider = :provider AND state = 'current';

-- name: insert_current_key
INSERT INTO provider_keys (provider, key_id, secret, state)
VALUES (:provider, :key_id, :secret, 'current');

-- name: provider_keys
SELECT key_id, state, created_at FROM provider_keys WHERE provider = :provider
 ORDER BY created_at DESC;

-- name: insert_player
-- The wallet account and the player in one statement: both exist or neither does.
WITH account AS (
    INSERT INTO accounts (kind, owner, currency, balance)
    VALUES ('player', :player_id, :currency, 0)
    RETURNING id
)
INSERT INTO players (player_id, account_id, currency)
SELECT :player_id, id, :currency FROM account
RETURNING player_id;

-- name: get_player
SELECT p.player_id, p.currency, p.status, p.kyc_tier, a.balance, p.created_at, p.updated_at
  FROM players p JOIN accounts a ON a.id = p.account_id
 WHERE p.player_id = :player_id;

-- name: set_player_status
UPDATE players SET status = :status, updated_at = now() WHERE player_id = :player_id
RETURNING player_id;

-- name: provider_exists
SELECT 1 FROM providers WHERE code = :code;

-- name: insert_session
-- The same statement brings the player into the provider's scope (trigger, sql/010).
INSERT INTO sessions (token_hash, player_id, provider, game_id, expires_at)
VALUES (:token_hash, :player_id, :provider, :game_id, now() + make_interval(secs => :ttl_seconds))
RETURNING expires_at;

-- name: adjust
SELECT * FROM wallet_adjust(:idempotency_key, :player_id, :amount, :reason, :actor);

-- name: adjustment_by_id
SELECT id, player_id, amount, delta, balance_after, currency, metadata ->> 'reason' AS reason,
       external_id AS idempotency_key, created_at
  FROM ledger_transactions WHERE id = :id;

-- name: set_kyc_tier
UPDATE players SET kyc_tier = :kyc_tier, updated_at = now() WHERE player_id = :player_id
RETURNING player_id;

