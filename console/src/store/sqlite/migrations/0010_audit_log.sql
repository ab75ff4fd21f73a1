-- Who changed what. Entries are only ever added.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    object   TEXT NOT NULL,
    project  TEXT
);
CREATE INDEX audit_log_project ON audit_log (project, id);
