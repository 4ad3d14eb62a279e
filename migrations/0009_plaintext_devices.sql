-- MQTT goes over TLS by default. A device may use plain MQTT only if the owner marked it as
-- unable to do TLS. Before this, every device used plain MQTT or CoAP, and which one is not
-- recorded: every device present at the upgrade is marked, so nothing drops off; the owner
-- sees which ones still connect in clear (`clear_seen_ms`) and takes the mark away.
ALTER TABLE devices ADD COLUMN plaintext INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN clear_seen_ms INTEGER;
UPDATE devices SET plaintext = 1 WHERE removed_ms IS NULL;
