-- The security log: setup, logins and failures, credential changes, class changes,
-- tenancy events, grants, tokens. Each entry belongs to a data subject (`owner` or
-- `tenancy:<id>`, who reads it; NULL for the hub's own, which the owner reads), since when
-- a tenant logs in says when they are home. Its body (who, from where, what) is sealed with
-- the hub key, bound to its row; it never holds a reading value. Kept bounded in size and
-- age by the hub; a tenancy's entries go with its shred.
CREATE TABLE security_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms    INTEGER NOT NULL,
    subject  TEXT,
    kind     TEXT NOT NULL,
    body     BLOB NOT NULL
);
CREATE INDEX security_log_by_subject ON security_log (subject, id);
CREATE INDEX security_log_by_time ON security_log (ts_ms);
