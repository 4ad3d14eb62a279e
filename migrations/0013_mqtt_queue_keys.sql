-- A queued MQTT command is sealed under the data key of the subject whose rule sent it, as
-- that subject's readings are: shredding a tenancy destroys the key of its commands too.
-- Rows sealed before this (with the hub key) have no key_id.
ALTER TABLE mqtt_queue ADD COLUMN key_id INTEGER REFERENCES data_keys(id);
