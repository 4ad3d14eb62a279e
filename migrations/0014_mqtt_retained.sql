-- Retained commands: the last command the hub sent on a topic whose device asked for it
-- retained (Home Assistant discovery's `retain`), for sessions that subscribe later (a
-- sleeping node with a clean session). One per topic, bounded by the hub. Topic and payload
-- are sealed together (the topic names the device) under the data key of the subject whose
-- rule sent it, bound to the row's message id. Shredding a tenancy deletes its commands and
-- those for its own devices; removing a device deletes those for it and those its sessions
-- would get.
CREATE TABLE mqtt_retained (
    -- Never reused: a row number names one command for as long as the hub runs.
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Whose sessions get it: the device, or the bridge it is behind.
    device_id TEXT NOT NULL,
    -- The device it commands.
    target_id TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    key_id    INTEGER NOT NULL REFERENCES data_keys(id),
    sent_ms   INTEGER NOT NULL,
    message   BLOB NOT NULL
);
CREATE INDEX mqtt_retained_by_subject ON mqtt_retained (subject);
CREATE INDEX mqtt_retained_by_device ON mqtt_retained (device_id);
CREATE INDEX mqtt_retained_by_target ON mqtt_retained (target_id);
