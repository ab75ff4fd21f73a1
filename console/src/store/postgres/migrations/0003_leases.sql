-- Leases of the console's singletons (the rollout engine, the stopped-server sweep): the
-- console named by holder runs it until expires_ms (its own clock, in milliseconds since the
-- Unix epoch), renewing as it goes. console/src/store/leases.rs says how one is taken.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
