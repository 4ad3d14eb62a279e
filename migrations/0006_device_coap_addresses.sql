-- Where rules send a device CoAP commands: an IP address with an optional port, set by the
-- owner and sealed with the hub key (bound to the device id) like the device's name. Rules
-- name the device, never an address of their own.
ALTER TABLE devices ADD COLUMN coap_sealed BLOB;
