-- no-transaction
-- People beyond the owner (tenants, guests), third-party recipients, who owns which
-- readings, and consent: requests, grants, signed receipts, and the hash-chained log.
--
-- Widening the CHECK on users.role means rebuilding that table, which SQLite only allows
-- with foreign keys off, and that pragma cannot change inside a transaction: so this file
-- opens its own.
PRAGMA foreign_keys = OFF;
BEGIN;

-- A tenancy: a tenant lives here during [start_ms, end_ms). Household readings made then
-- are the tenant's and sealed under key_id; shredding destroys that key.
CREATE TABLE tenancies (
    id                 INTEGER PRIMARY KEY,
    start_ms           INTEGER NOT NULL,
    end_ms             INTEGER,
    retention_days     INTEGER NOT NULL CHECK (retention_days >= 0),
    key_id             INTEGER NOT NULL REFERENCES data_keys(id),
    created_ms         INTEGER NOT NULL,
    shredded_ms        INTEGER,
    CHECK (end_ms IS NULL OR end_ms > start_ms)
);

CREATE TABLE users_new (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'tenant', 'guest')),
    created_ms    INTEGER NOT NULL,
    -- The tenancy of a tenant.
    tenancy_id    INTEGER UNIQUE REFERENCES tenancies(id),
    -- Who invited a guest (whose data the guest may see).
    invited_by    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    CHECK ((role = 'tenant') = (tenancy_id IS NOT NULL)),
    CHECK ((role = 'guest') = (invited_by IS NOT NULL))
);
INSERT INTO users_new (id, username, password_hash, role, created_ms)
    SELECT id, username, password_hash, role, created_ms FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

-- One-time invite codes (only their SHA-256 is kept).
CREATE TABLE invites (
    code_hash   BLOB PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('tenant', 'guest')),
    tenancy_id  INTEGER REFERENCES tenancies(id),
    invited_by  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- For guests: the devices they may see, as a JSON array of ids.
    devices     TEXT,
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Devices a guest may see.
CREATE TABLE guest_devices (
    guest_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id),
    PRIMARY KEY (guest_id, device_id)
) WITHOUT ROWID;

-- A tenant's own device belongs to its tenancy.
ALTER TABLE devices ADD COLUMN tenancy_id INTEGER REFERENCES tenancies(id);

-- The class of a device over time: a change applies from from_ms on, never to the past.
CREATE TABLE device_classes (
    device_id TEXT NOT NULL REFERENCES devices(id),
    from_ms   INTEGER NOT NULL,
    class     TEXT NOT NULL CHECK (class IN ('household', 'building')),
    PRIMARY KEY (device_id, from_ms)
) WITHOUT ROWID;

-- The owner's data key was called the household's.
UPDATE data_keys SET subject = 'owner' WHERE subject = 'household';

-- Third parties that may ask for data. Their secret is random (190 bits), so SHA-256 of it
-- is enough to store.
CREATE TABLE recipients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    registered_by INTEGER NOT NULL REFERENCES users(id),
    created_ms    INTEGER NOT NULL,
    removed_ms    INTEGER
);

-- What a recipient asks a data subject for.
CREATE TABLE data_requests (
    id            INTEGER PRIMARY KEY,
    recipient_id  TEXT NOT NULL REFERENCES recipients(id),
    subject_id    INTEGER NOT NULL REFERENCES users(id),
    -- JSON: categories, metrics, granularity, window, duration, purpose, offer.
    terms         TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'granted', 'denied')),
    decided_ms    INTEGER
);

-- What a subject granted (possibly narrower than asked).
CREATE TABLE grants (
    id            TEXT PRIMARY KEY,
    request_id    INTEGER NOT NULL REFERENCES data_requests(id),
    recipient_id  TEXT NOT NULL REFERENCES recipients(id),
    subject_id    INTEGER NOT NULL REFERENCES users(id),
    -- JSON: categories, metrics, granularity, window, expiry, purpose, offer.
    terms         TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER,
    expiry_recorded INTEGER NOT NULL DEFAULT 0
);

-- Signed consent receipts (compact JWS, EdDSA).
CREATE TABLE receipts (
    id          TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES grants(id),
    event       TEXT NOT NULL CHECK (event IN ('granted', 'revoked', 'expired')),
    created_ms  INTEGER NOT NULL,
    jws         TEXT NOT NULL
);

-- The hub's Ed25519 receipt-signing key, sealed with the hub key.
CREATE TABLE signing_keys (
    id          INTEGER PRIMARY KEY,
    sealed      BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created_ms  INTEGER NOT NULL
);

-- Every recipient read and consent event, append-only and hash-chained: each row's hash
-- covers the previous row's hash and this row's fields.
CREATE TABLE access_log (
    seq         INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    subject_id  INTEGER NOT NULL,
    recipient_id TEXT NOT NULL,
    grant_id    TEXT,
    detail      TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;

COMMIT;
PRAGMA foreign_keys = ON;
