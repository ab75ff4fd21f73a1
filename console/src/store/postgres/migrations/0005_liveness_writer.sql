-- Which transaction last wrote a node's liveness or enrollment, and which console: each
-- console's periodic load of liveness takes only the rows other consoles wrote in
-- transactions its previous load could not see (liveness.rs). PostgreSQL only: SQLite has
-- one console, and `migrate` leaves these columns to their defaults.
ALTER TABLE servers ADD COLUMN live_xid BIGINT NOT NULL DEFAULT txid_current();
ALTER TABLE servers ADD COLUMN live_writer BIGINT;
-- Whether a group has a server (every submit asks): the first of its servers by id, which this
-- index finds in one step whatever the planner guesses of the group's size.
CREATE INDEX servers_group_id ON servers(group_id, id);
