-- `chunks` was a WITHOUT ROWID table clustered by (series_id, hour, seq). An hour of a
-- 10-second sensor (about 1,400 bytes sealed) is more than such a table keeps in its leaf
-- (about 1,000 bytes with 4 KiB pages), so every chunk also took an overflow page, and a
-- fold, which adds one chunk to each series, wrote a leaf in each series' part of the tree
-- and an overflow page besides. Chunks now lie in the order they were written (an
-- ordinary rowid table, where a row keeps up to about 4,000 bytes in its leaf), so a fold
-- appends them at the end; an index keeps a series' hours in order for reads.
-- Decision 0031 has the measurements.
CREATE TABLE chunks_in_order (
    series_id INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    body      BLOB NOT NULL
);

-- Copied in the old table's order (by series), which needs no sort: the history from
-- before stays grouped by series, new chunks follow in the order they are written.
INSERT INTO chunks_in_order (series_id, hour, seq, key_id, body)
    SELECT series_id, hour, seq, key_id, body FROM chunks;

-- The old pages hold the same sealed rows as the copy: zeroing them as they are freed
-- (secure_delete) would write the whole table once more for nothing.
PRAGMA secure_delete = OFF;
DROP TABLE chunks;
PRAGMA secure_delete = ON;

ALTER TABLE chunks_in_order RENAME TO chunks;

-- A series' hours in order; the key too, so that what a caller may read (its keys) is
-- known from the index alone.
CREATE UNIQUE INDEX chunks_by_series ON chunks (series_id, hour, seq, key_id);
