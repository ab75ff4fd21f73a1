-- One-time enrollment tokens behind install commands. Only a SHA-256 of each token is kept.
CREATE TABLE enrollment_tokens (
    id             INTEGER PRIMARY KEY,
    token_sha256   TEXT NOT NULL UNIQUE,
    group_id       INTEGER NOT NULL REFERENCES resource_groups(id),
    user_id        INTEGER NOT NULL REFERENCES users(id),
    created_ms     INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL,
    used_ms        INTEGER,
    used_by        TEXT
);
