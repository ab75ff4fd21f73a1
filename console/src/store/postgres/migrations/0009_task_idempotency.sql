-- A submit may carry a key naming it, so that a client that lost the answer can send it again
-- and get the task the first one made: one task per key and group.
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (group_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
