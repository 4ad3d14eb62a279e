-- Bearer tokens expire. Tokens made before this have 90 days from the upgrade.
ALTER TABLE api_tokens ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
UPDATE api_tokens SET expires_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 90 * 86400000;
