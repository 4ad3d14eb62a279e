-- Automations (rules, their run traces, timers that survive a restart, virtual values,
-- notifications) and the cloud outbox. Every body is sealed with the hub key, bound to its
-- row: rules and traces describe the household's habits as much as readings do.

-- A rule. Its definition (name, triggers, conditions, actions) is sealed JSON. It acts
-- for its author's data subject: it sees only readings that belong to its author.
CREATE TABLE rules (
    id          INTEGER PRIMARY KEY,
    author_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    body        BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);

-- Recent runs of each rule, newest kept: what triggered it, which conditions passed or
-- failed, what it did.
CREATE TABLE rule_runs (
    id          INTEGER PRIMARY KEY,
    rule_id     INTEGER NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    started_ms  INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX rule_runs_by_rule ON rule_runs (rule_id, id);

-- Timers that must survive a restart: a run paused in a delay ('resume'), and a threshold
-- that must hold for some minutes before its rule fires ('hold').
CREATE TABLE automation_timers (
    id          INTEGER PRIMARY KEY,
    rule_id     INTEGER NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('resume', 'hold')),
    due_ms      INTEGER NOT NULL,
    body        BLOB NOT NULL
);

-- Helpers and modes ("away", "guest mode"), one namespace per data subject.
CREATE TABLE virtual_values (
    subject     TEXT NOT NULL,
    name        TEXT NOT NULL,
    body        BLOB NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (subject, name)
) WITHOUT ROWID;

-- Messages for a person, from their rules or from the hub itself (outbox full, say).
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_ms  INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);

-- Cloud-bound messages, written before anything is sent: delivered in seq order per
-- destination, deleted once the destination acknowledged them.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination  TEXT NOT NULL,
    msg_id       TEXT NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    body         BLOB NOT NULL
);
CREATE INDEX outbox_by_destination ON outbox (destination, seq);

-- What each destination has done: for the status page and the "outbox full" alert.
CREATE TABLE outbox_stats (
    destination      TEXT PRIMARY KEY,
    delivered        INTEGER NOT NULL DEFAULT 0,
    dropped          INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_attempt_ms  INTEGER,
    last_success_ms  INTEGER
) WITHOUT ROWID;

-- Small facts the hub keeps about itself (the last time tick, to catch up missed time
-- triggers after a restart).
CREATE TABLE hub_state (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
