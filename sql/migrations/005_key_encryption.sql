-- Provider keys at rest: sealed under WALLET_MASTER_KEY (docs/design.md, "Keys at rest").
--
-- A sealed key is 0x01 || nonce (12 bytes) || AES-256-GCM ciphertext (32) || tag (16): 61 bytes,
-- with the provider code and key id as associated data. The master key never reaches Postgres,
-- so this migration cannot seal the raw 32-byte keys already stored: `wallet serve` seals them at
-- start-up, before it serves (or `wallet keys encrypt` does), and the wallet uses no raw key.
ALTER TABLE provider_keys DROP CONSTRAINT provider_keys_secret_check;
ALTER TABLE provider_keys ADD CONSTRAINT provider_keys_secret_sealed_or_raw
    CHECK ((octet_length(secret) = 61 AND get_byte(secret, 0) = 1) OR octet_length(secret) = 32);
COMMENT ON COLUMN provider_keys.secret IS
    'sealed under WALLET_MASTER_KEY (61 bytes, version 1); 32 bytes: raw, from before migration 5';
