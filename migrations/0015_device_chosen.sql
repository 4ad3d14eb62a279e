-- What people chose for a device, kept apart from what discovery announces so that a
-- re-announce never overwrites it: the name they gave it, its room, whether it is a
-- favourite or hidden, and names for its values. One JSON document sealed with the hub key
-- like the device's name (a room and a name say who lives where).
ALTER TABLE devices ADD COLUMN chosen_sealed BLOB;
