-- How often a series usually reports: an average of the gaps between its readings (each
-- new gap weighs a quarter), so a page can mark a value whose device has gone silent past
-- its usual interval. Derived from `latest.ts`, which is already plain.
ALTER TABLE latest ADD COLUMN every_ms INTEGER;
