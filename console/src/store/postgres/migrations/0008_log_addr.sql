-- Where a classic server's log service listens (the address its last heartbeat came from and
-- the port it named), written with its liveness: any console reads a classic server's task
-- logs, not only the one its heartbeats reach. PostgreSQL only: SQLite has one console, and
-- `migrate` leaves this column NULL until the next heartbeat.
ALTER TABLE servers ADD COLUMN log_addr TEXT;
