-- The task logs VPC servers push, so every console reads what any of them received: a log's
-- size, and its bytes in the chunks they were pushed in (a chunk starts where the log ended;
-- console/src/store/logs.rs has the rules). They go with their task.
CREATE TABLE task_logs (
    task_id  BIGINT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    size     BIGINT NOT NULL CHECK (size >= 0)
);

CREATE TABLE task_log_chunks (
    task_id  BIGINT NOT NULL REFERENCES task_logs(task_id) ON DELETE CASCADE,
    start    BIGINT NOT NULL CHECK (start >= 0),
    data     BYTEA NOT NULL,
    PRIMARY KEY (task_id, start)
);
