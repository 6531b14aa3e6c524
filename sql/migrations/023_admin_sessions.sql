-- Back-office sessions (app/admin/auth.py). The cookie holds a random token; only its SHA-256 is
-- kept here, with the SHA-256 of the API key that signed in (api_keys.key_hash, or the bootstrap
-- key's), never the key itself. Every request joins the session to api_keys on that hash, so a
-- revoked key ends its sessions at once, and a changed WALLET_ADMIN_API_KEY ends the bootstrap
-- key's. Postgres rather than Redis: the revocation check is one join, and a Redis restart does
-- not sign everyone out.
CREATE TABLE admin_sessions (
    token_hash  bytea PRIMARY KEY,
    key_hash    bytea NOT NULL,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
