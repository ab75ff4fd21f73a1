-- A host name or UUID is bound to a project only when an agent enrolls with it. Until then,
-- several projects may each have a pending server of that name (none of them learns of the
-- others); inside one project a name is in at most one group (UNIQUE (project_id, name)); and
-- among enrolled servers a name is unique across the console (servers_enrolled_name), so the
-- first enrollment wins. project_id repeats the group's project (a group never changes
-- project) because SQLite's unique constraints cannot reach through a join.
--
-- enroll_generation counts a server's enrollments. Each enrollment's transaction increments
-- it and hands the new value to the in-memory liveness map, which takes a node only when its
-- generation is newer than the one it holds, so the map ends where the database ends.
--
-- SQLite cannot drop the old UNIQUE (name), so the table is copied into a new one; the
-- migration runs with foreign keys off and checks them before it commits.
CREATE TABLE servers_new (
    id                 INTEGER PRIMARY KEY,
    group_id           INTEGER NOT NULL REFERENCES resource_groups(id),
    project_id         INTEGER NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
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
    enroll_generation  INTEGER NOT NULL DEFAULT 0,
    -- liveness, written in batches
    agent_version      TEXT,
    last_heartbeat_ms  INTEGER,
    clock_offset_ms    INTEGER,
    running_tasks      INTEGER NOT NULL DEFAULT 0,
    stopped_ms         INTEGER,
    stop_reason        TEXT,
    UNIQUE (project_id, name)
);

INSERT INTO servers_new (id, group_id, project_id, name, max_concurrency, created_ms, node_id,
                         secret_sha256, enrolled_ms, hostname, cpu_cores, memory_bytes, os, arch,
                         kernel, enroll_generation, agent_version, last_heartbeat_ms,
                         clock_offset_ms, running_tasks, stopped_ms, stop_reason)
SELECT s.id, s.group_id, g.project_id, s.name, s.max_concurrency, s.created_ms, s.node_id,
       s.secret_sha256, s.enrolled_ms, s.hostname, s.cpu_cores, s.memory_bytes, s.os, s.arch,
       s.kernel, CASE WHEN s.node_id IS NULL THEN 0 ELSE 1 END, s.agent_version,
       s.last_heartbeat_ms, s.clock_offset_ms, s.running_tasks, s.stopped_ms, s.stop_reason
FROM servers s JOIN resource_groups g ON g.id = s.group_id;

DROP TABLE servers;
ALTER TABLE servers_new RENAME TO servers;

CREATE INDEX servers_group ON servers(group_id);
CREATE UNIQUE INDEX servers_enrolled_name ON servers(name) WHERE node_id IS NOT NULL;
