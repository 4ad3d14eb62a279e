-- Hearth foundation schema. An applied migration is never edited: add a new file instead.

-- People who log in to the hub. Passwords are Argon2id PHC strings.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner')),
    created_ms    INTEGER NOT NULL
);

-- Browser sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Bearer tokens for scripts: only the SHA-256 of the token is stored.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL
);

-- Data keys, each wrapped by the hub key (kept outside this file). Readings name the key
-- they are sealed under, so a data subject's period can later get a key of its own and
-- that key can be destroyed (crypto-shredding) without touching other data.
CREATE TABLE data_keys (
    id           INTEGER PRIMARY KEY,
    subject      TEXT NOT NULL,
    wrapped      BLOB,
    created_ms   INTEGER NOT NULL,
    destroyed_ms INTEGER
);

-- Devices. The name the user typed and the device secret are sealed with the hub key.
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    name_sealed    BLOB NOT NULL,
    secret_sealed  BLOB,
    created_ms     INTEGER NOT NULL,
    credentials_ms INTEGER NOT NULL,
    removed_ms     INTEGER
);

-- One series per (device, metric).
CREATE TABLE series (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    metric    TEXT NOT NULL,
    unit      TEXT,
    UNIQUE (device_id, metric)
);

-- Readings, sealed in chunks: each row holds the readings of one series within one hour
-- that were committed together (or merged later). Timestamps and values are inside the
-- sealed body; only the series and the hour are visible.
CREATE TABLE chunks (
    series_id INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    body      BLOB NOT NULL,
    PRIMARY KEY (series_id, hour, seq)
) WITHOUT ROWID;

-- The latest reading of each series, sealed, for dashboards.
CREATE TABLE latest (
    series_id INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    body      BLOB NOT NULL
);
