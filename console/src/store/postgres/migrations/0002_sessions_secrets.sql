-- Web console sessions and the console's own secrets, shared by every console on this database
-- (the same tables as SQLite's migration 0007; console/src/store/secrets.rs says what they hold).
-- A session is kept by the SHA-256 of its token only; user_name and project are NULL for the
-- admin. Secrets are written once with INSERT ... ON CONFLICT DO NOTHING, so the first console
-- to create one wins and the others read it. console_secrets holds private keys: grant this
-- database to the consoles' role alone.
CREATE TABLE web_sessions (
    token_sha256 BYTEA PRIMARY KEY CHECK (octet_length(token_sha256) = 32),
    user_name    TEXT,
    project      TEXT,
    csrf         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    seen_ms      BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    CHECK ((user_name IS NULL) = (project IS NULL))
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_ms);
CREATE INDEX web_sessions_user ON web_sessions (user_name, seen_ms);

CREATE TABLE console_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
