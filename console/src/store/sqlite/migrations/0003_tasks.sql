-- Shell-script tasks submitted to a resource group and run on one of its servers.
-- `lease` grows each time a task is handed to a server; an agent's start, log and finish must
-- carry the current one (the fencing token), so a stale assignment can do nothing.
CREATE TABLE tasks (
    id                INTEGER PRIMARY KEY,
    group_id          INTEGER NOT NULL REFERENCES resource_groups(id),
    script            TEXT NOT NULL,
    timeout_secs      INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'assigned', 'running', 'succeeded',
                                                     'failed', 'timed_out', 'cancelled', 'lost')),
    reason            TEXT,
    submitted_ms      INTEGER NOT NULL,
    server_id         INTEGER REFERENCES servers(id),
    lease             INTEGER NOT NULL DEFAULT 0,
    assigned_ms       INTEGER,
    started_ms        INTEGER,
    finished_ms       INTEGER,
    exit_code         INTEGER,
    signal            INTEGER,
    log_bytes         INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX tasks_queue ON tasks(group_id, state, id);
CREATE INDEX tasks_server ON tasks(server_id, state);
