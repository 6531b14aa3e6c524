-- Provider keys at rest (app/seamless/keys.py): sealing raw keys, checking and changing the
-- master key. The hot path reads keys with active_provider_keys (seamless.sql).

-- name: stored_provider_keys
SELECT provider, key_id, secret, state FROM provider_keys ORDER BY provider, key_id;

-- name: stored_provider_keys_for_update
SELECT provider, key_id, secret, state FROM provider_keys ORDER BY provider, key_id FOR UPDATE;

-- name: set_provider_key_secret
UPDATE provider_keys SET secret = :secret WHERE provider = :provider AND key_id = :key_id;
