-- CoAP resources the hub observes on a device that serves its readings ("report only"
-- devices): a list of coap:// or coaps:// URIs, set by the owner and sealed with the hub
-- key, bound to the device id, like its CoAP address.
ALTER TABLE devices ADD COLUMN observe_sealed BLOB;
