-- The data plane leaves the database: raw rows move into Delta Lake tables and snapshots into
-- Parquet files, under DATA_DIR or an object store. The database keeps where they are and
-- which version of each table a snapshot read. Blobs stored before are moved once, at start
-- (`offline::migrate`), which then clears them.

-- Where a raw table's rows live: relative to DATA_DIR for a Delta table this service owns, a
-- URI for an external dataset. Null until the move at start creates the table.
ALTER TABLE raw_tables ADD COLUMN storage_uri TEXT;
-- Null: a Delta table this service owns and writes. 'delta' or 'parquet': an external
-- dataset, registered read-only.
ALTER TABLE raw_tables ADD COLUMN source_format TEXT CHECK (source_format IN ('delta', 'parquet'));

-- Each version of a raw table the service has seen: a Delta commit (an ingest, or one found in
-- an external table) or a changed listing of a Parquet dataset. Versions are in commit order,
-- so freshness compares them, unlike insert ids.
CREATE TABLE raw_table_versions (
    raw_table_id INTEGER NOT NULL REFERENCES raw_tables (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    -- Rows the version added (0 when an external table's files do not say).
    row_count    BIGINT NOT NULL,
    created_at   TEXT NOT NULL,
    -- A Parquet dataset's listing (names and sizes) at this version.
    fingerprint  TEXT,
    PRIMARY KEY (raw_table_id, version)
);

-- Snapshots: `data` (LZ4 Arrow IPC, legacy) becomes optional, `location` names the Parquet
-- file, `data_version` the table version read (`data_batch_id` is the legacy mark, mapped at
-- start). SQLite cannot drop NOT NULL, so the table is rebuilt.
CREATE TABLE feature_snapshots_new (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_version_id INTEGER NOT NULL REFERENCES feature_versions (id) ON DELETE CASCADE,
    valid_from         TEXT NOT NULL,
    computed_at        TEXT NOT NULL,
    entity_count       INTEGER NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('compute', 'backfill', 'refresh')),
    data               BLOB,
    location           TEXT,
    data_batch_id      BIGINT,
    data_version       BIGINT,
    data_as_of         TEXT,
    stats              TEXT,
    drift_base         BIGINT,
    drift              TEXT
);
INSERT INTO feature_snapshots_new (id, feature_version_id, valid_from, computed_at, entity_count,
    kind, data, data_batch_id, data_as_of, stats, drift_base, drift)
SELECT id, feature_version_id, valid_from, computed_at, entity_count, kind, data, data_batch_id,
    data_as_of, stats, drift_base, drift FROM feature_snapshots;
DROP TABLE feature_snapshots;
ALTER TABLE feature_snapshots_new RENAME TO feature_snapshots;
CREATE INDEX feature_snapshots_by_version ON feature_snapshots (feature_version_id, valid_from, id);

ALTER TABLE feature_versions ADD COLUMN data_version BIGINT;

-- Served vectors by generation: a publish writes its whole set under a new generation in
-- chunks, then one small transaction points the version at it, and the old one is dropped in
-- chunks afterwards. A generation whose publish died is found by its job and dropped.
CREATE TABLE vector_generations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    state      TEXT NOT NULL CHECK (state IN ('writing', 'served', 'retired')),
    job_id     BIGINT,
    created_at TEXT NOT NULL
);
CREATE INDEX vector_generations_by_state ON vector_generations (state, id);

-- Each computed version's vectors become a generation numbered above every generation counter
-- used before, so no cache key (version, generation, entity) can mean two things.
CREATE TABLE generation_base (base BIGINT NOT NULL);
INSERT INTO generation_base SELECT COALESCE(MAX(generation), 0) + 1 FROM feature_versions;
UPDATE feature_versions SET generation = (SELECT base FROM generation_base) + id
WHERE computed_at IS NOT NULL;
INSERT INTO vector_generations (id, state, job_id, created_at)
SELECT generation, 'served', NULL, computed_at FROM feature_versions WHERE computed_at IS NOT NULL;
-- (An explicit id moves the AUTOINCREMENT counter past it, so new ids start above these.)
DROP TABLE generation_base;

CREATE TABLE feature_vectors_new (
    generation     INTEGER NOT NULL,
    entity_id      TEXT NOT NULL,
    feature_values TEXT NOT NULL,
    PRIMARY KEY (generation, entity_id)
) WITHOUT ROWID;
INSERT INTO feature_vectors_new (generation, entity_id, feature_values)
SELECT v.generation, fv.entity_id, fv.feature_values
FROM feature_vectors fv JOIN feature_versions v ON v.id = fv.feature_version_id;
DROP TABLE feature_vectors;
ALTER TABLE feature_vectors_new RENAME TO feature_vectors;

-- Every cached lookup names an old generation now.
UPDATE cache_state SET changes = changes + 1 WHERE id = 1;
