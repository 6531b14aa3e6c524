-- The back office's sessions (sql/migrations/023_admin_sessions.sql, app/admin/auth.py).

-- name: insert_admin_session
INSERT INTO admin_sessions (token_hash, key_hash, actor, expires_at)
VALUES (:token_hash, :key_hash, :actor, now() + make_interval(secs => :ttl_seconds));

-- name: admin_session
-- A live session, with the role of its API key while that key is not revoked (NULL when it is,
-- and for the bootstrap key, which is checked against the settings instead).
SELECT s.actor, s.key_hash, k.role
  FROM admin_sessions s
  LEFT JOIN api_keys k ON k.key_hash = s.key_hash AND k.revoked_at IS NULL
 WHERE s.token_hash = :token_hash AND s.expires_at > now();

-- name: delete_admin_session
DELETE FROM admin_sessions WHERE token_hash = :token_hash;

-- name: prune_admin_sessions
-- Bounded, so that a sign-in never waits on a long delete.
DELETE FROM admin_sessions
 WHERE token_hash IN (SELECT token_hash FROM admin_sessions WHERE expires_at <= now() LIMIT 100);
