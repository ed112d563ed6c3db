-- Event time: the column of a raw table that says when each row happened (date or datetime).
ALTER TABLE raw_tables ADD COLUMN event_time_column TEXT;

-- Every publish of a version keeps its whole vector set: the typed result columns as one
-- LZ4-compressed Arrow IPC file. What is served is the snapshot with the greatest
-- (valid_from, id); feature_vectors holds that one, row by row, for point reads.
CREATE TABLE feature_snapshots (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_version_id INTEGER NOT NULL REFERENCES feature_versions (id) ON DELETE CASCADE,
    valid_from         TEXT NOT NULL,
    computed_at        TEXT NOT NULL,
    entity_count       INTEGER NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('compute', 'backfill', 'refresh')),
    data               BLOB NOT NULL
);
CREATE INDEX feature_snapshots_by_version ON feature_snapshots (feature_version_id, valid_from, id);
