-- Web console sessions and the console's own secrets live in the database, so a restart signs
-- no one out and every console sharing the database uses the same admin token, log-token key
-- and TLS CA.
--
-- A session is kept by the SHA-256 of its token only (the token is in the browser's cookie).
-- user_name and project are NULL for the admin. expires_ms is the sooner of the idle and the
-- lifetime limit as of the last recorded use; expired rows are deleted when found and at each
-- sign-in, and sign-ins past a cap per principal and in all delete the least recently used.
CREATE TABLE web_sessions (
    token_sha256 BLOB PRIMARY KEY CHECK (length(token_sha256) = 32),
    user_name    TEXT,
    project      TEXT,
    csrf         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    seen_ms      INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    CHECK ((user_name IS NULL) = (project IS NULL))
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_ms);
CREATE INDEX web_sessions_user ON web_sessions (user_name, seen_ms);

-- Secrets by name (see console/src/store/secrets.rs for the names): written once with
-- INSERT ... ON CONFLICT DO NOTHING, so the first console to create one wins and the others
-- read it. Holds private keys: the database file is kept 0600 in a 0700 directory.
CREATE TABLE console_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
