-- Task ids are never reused. Deleting a resource group deletes its finished tasks; without
-- AUTOINCREMENT, SQLite would hand the newest of those ids to the next task, whose log file
-- (DATA/task-logs/ID.log) and leases are keyed by the id. SQLite cannot add AUTOINCREMENT to a
-- table, so the table is copied into one that has it.
CREATE TABLE tasks_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
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

INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

CREATE INDEX tasks_queue ON tasks(group_id, state, id);
CREATE INDEX tasks_server ON tasks(server_id, state);
