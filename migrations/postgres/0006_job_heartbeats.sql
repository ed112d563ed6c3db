-- A job's replica proves it is still working on it; a queued or running job whose heartbeat
-- stopped (its replica died) is marked failed by the scheduler.
ALTER TABLE jobs ADD COLUMN heartbeat_at TIMESTAMPTZ;
UPDATE jobs SET heartbeat_at = COALESCE(started_at, created_at);
