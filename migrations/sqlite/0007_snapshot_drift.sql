-- Drift of a snapshot from the one before it (`drift_base`), as JSON, kept once computed: the
-- console's overview and the default drift request read it instead of decoding both snapshots.
ALTER TABLE feature_snapshots ADD COLUMN drift_base BIGINT;
ALTER TABLE feature_snapshots ADD COLUMN drift TEXT;
