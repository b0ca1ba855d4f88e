-- Passwords for signing in to the web UI, as PBKDF2-HMAC-SHA256 strings
-- (never the password), and the sessions of signed-in browsers, known by
-- the SHA-256 digest of their cookie only.
ALTER TABLE users ADD COLUMN password_digest TEXT;

CREATE TABLE web_sessions (
    token_digest TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
