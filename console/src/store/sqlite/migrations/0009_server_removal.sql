-- Removing a server from its group, and moving it to another.
--
-- draining_ms: set when an operator asked to remove the server once its running tasks finish;
-- a draining server is handed no new tasks.
--
-- tasks.server_name keeps the name of the server a task ran on once that server is removed
-- (its row goes, and tasks.server_id is cleared), so the task history still says where.
--
-- removed_nodes: the node ids of removed servers with the digest of their secret. A removed
-- node's credentials no longer work; a request that proves them is answered "removed" (410)
-- instead of "unknown node", so its agent stops knocking. Node ids are never reused.
ALTER TABLE servers ADD COLUMN draining_ms INTEGER;
ALTER TABLE tasks ADD COLUMN server_name TEXT;

CREATE TABLE removed_nodes (
    node_id        TEXT PRIMARY KEY,
    secret_sha256  TEXT NOT NULL,
    server_name    TEXT NOT NULL,
    project_id     INTEGER NOT NULL REFERENCES projects(id),
    removed_ms     INTEGER NOT NULL
);
CREATE INDEX removed_nodes_time ON removed_nodes (removed_ms);
