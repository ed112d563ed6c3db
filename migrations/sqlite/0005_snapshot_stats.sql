-- Column statistics of each snapshot (JSON, `engine::stats`), computed in the compute worker
-- at publish. Snapshots from before have none; they are computed on demand.
ALTER TABLE feature_snapshots ADD COLUMN stats TEXT;
