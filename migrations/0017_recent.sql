-- Small commits (a quiet home: a few readings of many series) append here instead of
-- adding a chunk per series to `chunks`: one row per commit and owner's key, sealed, in
-- commit order, so a commit writes the end of one table rather than a page per series.
-- Rows are folded into `chunks` once their hours have ended (or when many are waiting).
-- Only the key and the hours covered are visible, as for a chunk.
CREATE TABLE recent (
    seq        INTEGER PRIMARY KEY,
    key_id     INTEGER NOT NULL,
    first_hour INTEGER NOT NULL,
    last_hour  INTEGER NOT NULL,
    body       BLOB NOT NULL
);

-- Which series hold readings under which key: what a subject can reach, wherever the
-- readings are (`chunks` or `recent`). Written when a pair first appears.
CREATE TABLE series_keys (
    series_id INTEGER NOT NULL,
    key_id    INTEGER NOT NULL,
    PRIMARY KEY (series_id, key_id)
) WITHOUT ROWID;

INSERT INTO series_keys (series_id, key_id) SELECT DISTINCT series_id, key_id FROM chunks;
