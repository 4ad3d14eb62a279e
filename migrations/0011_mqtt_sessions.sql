-- Persistent MQTT sessions of the embedded server (a client that connects with clean
-- session off): its subscriptions, and the QoS 1 messages waiting for it while it is away,
-- kept across restarts and sealed with the hub key. A message names the subject whose rule
-- sent it, so shredding a tenancy deletes its commands; a device's sessions go with it.
CREATE TABLE mqtt_sessions (
    device_id     TEXT NOT NULL REFERENCES devices(id),
    client_id     TEXT NOT NULL,
    subscriptions BLOB NOT NULL,
    seen_ms       INTEGER NOT NULL,
    PRIMARY KEY (device_id, client_id)
) WITHOUT ROWID;

CREATE TABLE mqtt_queue (
    seq       INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    queued_ms INTEGER NOT NULL,
    message   BLOB NOT NULL,
    FOREIGN KEY (device_id, client_id) REFERENCES mqtt_sessions (device_id, client_id) ON DELETE CASCADE
);
CREATE INDEX mqtt_queue_by_session ON mqtt_queue (device_id, client_id, seq);
CREATE INDEX mqtt_queue_by_subject ON mqtt_queue (subject);
