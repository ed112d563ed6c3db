-- A raw table that follows a stream (Kafka, NATS JetStream): its source, as the client sent
-- it (JSON, no secrets), and what the replica committing it last reported. The offsets
-- themselves live in the Delta table's transactions, not here: this row only shows them.
CREATE TABLE raw_table_streams (
    raw_table_id      INTEGER PRIMARY KEY REFERENCES raw_tables (id) ON DELETE CASCADE,
    source            TEXT NOT NULL,
    -- The Delta table of messages set aside (offset, raw bytes, reason).
    rejected_location TEXT NOT NULL,
    -- Moves when the source changes (set from the clock, so a stream deleted and set again is
    -- another generation too), so a replica following the old one stops.
    generation        BIGINT NOT NULL DEFAULT 1,
    -- One committer at a time: whoever holds this row's unexpired lease.
    holder            TEXT,
    expires_at        TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'starting',
    reason            TEXT,
    committed_offset  BIGINT,
    lag               BIGINT,
    events_committed  BIGINT NOT NULL DEFAULT 0,
    rejected          BIGINT NOT NULL DEFAULT 0,
    events_per_second DOUBLE PRECISION,
    last_commit_at    TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
