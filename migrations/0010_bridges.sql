-- Bridges: a device that publishes for others (a Zigbee2MQTT coordinator, a Tasmota plug)
-- inside topic namespaces its manager granted it, sealed with the hub key like its name.
-- Each device it speaks for is a device of its own, behind it: no credentials, what
-- discovery said of it sealed likewise, and the bridge's tenancy if the bridge is a
-- tenant's own.
ALTER TABLE devices ADD COLUMN namespaces_sealed BLOB;
ALTER TABLE devices ADD COLUMN bridge_id TEXT REFERENCES devices(id);
ALTER TABLE devices ADD COLUMN discovered_sealed BLOB;
CREATE INDEX devices_by_bridge ON devices (bridge_id) WHERE bridge_id IS NOT NULL;
