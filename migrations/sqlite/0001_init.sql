-- Registry tables keep the original service's names; ingested rows live beside them so one
-- backup and one transaction boundary cover everything.
CREATE TABLE raw_tables (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT,
    schema_definition TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

-- One row per accepted ingest: an LZ4-compressed Arrow IPC batch of typed columns.
CREATE TABLE raw_table_batches (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    raw_table_id INTEGER NOT NULL REFERENCES raw_tables (id) ON DELETE CASCADE,
    row_count    INTEGER NOT NULL,
    data         BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX raw_table_batches_by_table ON raw_table_batches (raw_table_id, id);

CREATE TABLE features (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT,
    raw_table_id      INTEGER NOT NULL REFERENCES raw_tables (id),
    computation_logic TEXT NOT NULL,
    entity_key        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX features_by_raw_table ON features (raw_table_id);

CREATE TABLE feature_versions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_id        INTEGER NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    version           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'deprecated', 'archived')),
    -- Snapshot taken at creation: recomputing a version later still means what it meant.
    computation_logic TEXT NOT NULL,
    entity_key        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    computed_at       TEXT,
    entity_count      INTEGER,
    output_schema     TEXT,
    -- Bumped by every publish; cache keys include it so a recompute never serves stale bytes.
    generation        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (feature_id, version)
);

CREATE TABLE feature_vectors (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_version_id INTEGER NOT NULL REFERENCES feature_versions (id) ON DELETE CASCADE,
    entity_id          TEXT NOT NULL,
    feature_values     TEXT NOT NULL,
    computed_at        TEXT NOT NULL,
    UNIQUE (feature_version_id, entity_id)
);
