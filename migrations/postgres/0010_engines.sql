-- What computes a feature's versions: `polars` (the compute workers) or `spark` (a cluster
-- reached through Spark Connect). Fixed when the feature is registered; each job records the
-- engine it ran on.
ALTER TABLE features ADD COLUMN engine TEXT NOT NULL DEFAULT 'polars'
    CHECK (engine IN ('polars', 'spark'));
ALTER TABLE jobs ADD COLUMN engine TEXT NOT NULL DEFAULT 'polars';
