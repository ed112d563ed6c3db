-- The truth about cache validity: every change to what is served (publish, status change,
-- delete) bumps `changes` in its own transaction. Replicas poll it; Redis only mirrors it.
-- `instance` names this database, so a Redis shared with an older or reset database never
-- mixes their counters.
CREATE TABLE cache_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    changes  BIGINT NOT NULL,
    instance TEXT NOT NULL
);
INSERT INTO cache_state (id, changes, instance) VALUES (1, 0, substr(md5(random()::text || clock_timestamp()::text), 1, 16));
