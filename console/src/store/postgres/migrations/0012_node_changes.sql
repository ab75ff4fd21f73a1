-- What each console's periodic load of liveness reads instead of the whole servers table
-- (liveness.rs): every liveness batch and every enrollment adds one row naming the servers it
-- wrote, stamped with its transaction id and console. A load reads the rows of transactions
-- its previous load could not see, then only those servers. A scan of servers every refresh
-- cost each console about 0.1 s of the database's time at 100,000 servers; an index on a
-- column every heartbeat writes would end heartbeats' HOT updates.
CREATE TABLE node_changes (
    xid BIGINT NOT NULL DEFAULT txid_current(),
    -- The console that wrote it; NULL for an enrollment, which is news to every console.
    writer BIGINT,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    server_ids BIGINT[] NOT NULL
);
CREATE INDEX node_changes_xid ON node_changes (xid);
-- Rows older than a minute are deleted; a load whose previous one is older than the newest
-- deleted row (`below`) reads every server instead.
CREATE TABLE node_changes_pruned (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    below BIGINT NOT NULL
);
INSERT INTO node_changes_pruned (below) VALUES (0);
-- Which transaction and console last wrote a server's row: what loads read before.
ALTER TABLE servers DROP COLUMN live_xid, DROP COLUMN live_writer;
