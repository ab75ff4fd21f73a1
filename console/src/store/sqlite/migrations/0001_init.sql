-- Projects, users, resource groups and servers. Times are milliseconds since the Unix epoch.
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL
);

-- A user's access key: user_name + password (only an Argon2id hash of it is kept).
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    project_id     INTEGER NOT NULL REFERENCES projects(id),
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_ms     INTEGER NOT NULL
);

CREATE TABLE resource_groups (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    network     TEXT NOT NULL CHECK (network IN ('classic', 'vpc')),
    created_ms  INTEGER NOT NULL,
    UNIQUE (project_id, name)
);

-- A server is in at most one group: its name (hostname or UUID) is unique across the console.
CREATE TABLE servers (
    id                 INTEGER PRIMARY KEY,
    group_id           INTEGER NOT NULL REFERENCES resource_groups(id),
    name               TEXT NOT NULL UNIQUE,
    max_concurrency    INTEGER,
    created_ms         INTEGER NOT NULL,
    -- set by enrollment
    node_id            TEXT UNIQUE,
    secret_sha256      TEXT,
    enrolled_ms        INTEGER,
    hostname           TEXT,
    cpu_cores          REAL,
    memory_bytes       INTEGER,
    os                 TEXT,
    arch               TEXT,
    kernel             TEXT,
    -- liveness, written in batches
    agent_version      TEXT,
    last_heartbeat_ms  INTEGER,
    clock_offset_ms    INTEGER,
    running_tasks      INTEGER NOT NULL DEFAULT 0,
    stopped_ms         INTEGER,
    stop_reason        TEXT
);

CREATE INDEX servers_group ON servers(group_id);

INSERT INTO projects (name, created_ms)
VALUES ('default', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
