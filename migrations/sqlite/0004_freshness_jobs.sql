-- Freshness: the newest stored raw batch a snapshot read (null: it read none, its rows came
-- with the request) and that batch's ingest time. The version keeps its served snapshot's, so
-- serving says how fresh a vector is without reading the snapshot.
ALTER TABLE feature_snapshots ADD COLUMN data_batch_id BIGINT;
ALTER TABLE feature_snapshots ADD COLUMN data_as_of TEXT;
ALTER TABLE feature_versions ADD COLUMN data_batch_id BIGINT;
ALTER TABLE feature_versions ADD COLUMN data_as_of TEXT;

-- What existed before is assumed to have read every batch stored when it was computed.
UPDATE feature_snapshots SET data_batch_id = (
    SELECT MAX(b.id) FROM raw_table_batches b
    JOIN features f ON f.raw_table_id = b.raw_table_id
    JOIN feature_versions v ON v.feature_id = f.id
    WHERE v.id = feature_snapshots.feature_version_id AND b.created_at <= feature_snapshots.computed_at);
UPDATE feature_versions SET data_batch_id = (
    SELECT MAX(b.id) FROM raw_table_batches b
    JOIN features f ON f.raw_table_id = b.raw_table_id
    WHERE f.id = feature_versions.feature_id AND b.created_at <= feature_versions.computed_at)
WHERE computed_at IS NOT NULL;
UPDATE feature_snapshots SET data_as_of = (SELECT created_at FROM raw_table_batches WHERE id = feature_snapshots.data_batch_id);
UPDATE feature_versions SET data_as_of = (SELECT created_at FROM raw_table_batches WHERE id = feature_versions.data_batch_id);

-- Scheduled refresh: every `refresh_every_seconds` (null: manual), recompute from stored rows
-- when the raw table has batches the served snapshot did not read.
ALTER TABLE feature_versions ADD COLUMN refresh_every_seconds BIGINT CHECK (refresh_every_seconds >= 1);
ALTER TABLE feature_versions ADD COLUMN next_refresh_at TEXT;
ALTER TABLE feature_versions ADD COLUMN refresh_checked_at TEXT;
ALTER TABLE feature_versions ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
CREATE INDEX feature_versions_due ON feature_versions (next_refresh_at)
    WHERE refresh_every_seconds IS NOT NULL;

-- One scheduler across replicas: whoever holds this row's unexpired lease.
CREATE TABLE scheduler_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    expires_at TEXT NOT NULL
);
INSERT INTO scheduler_lease (id, holder, expires_at) VALUES (1, NULL, '1970-01-01T00:00:00+00:00');

-- Computes, backfills and refreshes, as a log: no foreign keys, so history outlives what it
-- names.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('compute', 'backfill', 'refresh')),
    feature_id  BIGINT NOT NULL,
    version_id  BIGINT,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT
);
CREATE INDEX jobs_by_feature ON jobs (feature_id, id);
CREATE INDEX jobs_by_status ON jobs (status, id);
