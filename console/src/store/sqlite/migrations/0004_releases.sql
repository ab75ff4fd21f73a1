-- Self-update: published releases (signed manifests), each group's rollout, the servers a
-- rollout has admitted so far, and every server's latest update report.

-- `manifest` is the signed file exactly as published: the console hands it to agents unchanged,
-- and they check its signature. `rollback_manifest` is a signed rollback for the same version,
-- handed out instead when present. `issued_ms` and `signed_by` describe the newest of the two;
-- `targets` is a JSON array of the Rust targets the release has binaries for.
CREATE TABLE releases (
    version            TEXT PRIMARY KEY,
    channel            TEXT NOT NULL,
    manifest           TEXT NOT NULL,
    rollback_manifest  TEXT,
    issued_ms          INTEGER NOT NULL,
    published_ms       INTEGER NOT NULL,
    signed_by          TEXT NOT NULL,
    targets            TEXT NOT NULL
);

-- At most one rollout per group; setting another replaces it. `batch` is the JSON of a Batch.
CREATE TABLE rollouts (
    group_id      INTEGER PRIMARY KEY REFERENCES resource_groups(id) ON DELETE CASCADE,
    version       TEXT NOT NULL REFERENCES releases(version),
    batch         TEXT NOT NULL,
    max_failures  INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'halted', 'done')),
    reason        TEXT NOT NULL,
    started_ms    INTEGER NOT NULL
);

-- The servers admitted to their group's current rollout (offered its version).
CREATE TABLE rollout_members (
    group_id     INTEGER NOT NULL REFERENCES rollouts(group_id) ON DELETE CASCADE,
    server_id    INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    admitted_ms  INTEGER NOT NULL,
    PRIMARY KEY (group_id, server_id)
);

-- The latest update report of each server.
CREATE TABLE update_reports (
    server_id  INTEGER PRIMARY KEY REFERENCES servers(id) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('started', 'updated', 'failed', 'managed')),
    reason     TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
