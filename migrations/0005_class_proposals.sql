-- An owner's reclassification of a household device while a tenancy runs would take the
-- tenant's readings from then on: it waits here for the tenant's agreement.
CREATE TABLE class_proposals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('household', 'building')),
    tenancy_id  INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined')),
    decided_ms  INTEGER
);
CREATE INDEX class_proposals_by_tenancy ON class_proposals (tenancy_id, status);
