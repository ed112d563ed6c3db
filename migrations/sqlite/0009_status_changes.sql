-- When each version's status changed, so `as_of` by feature name can resolve the version that
-- was served by that name then (the newest one active then, computed by then). Versions made
-- before this table count as having had their present status since they were created.
CREATE TABLE version_status_changes (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_version_id INTEGER NOT NULL REFERENCES feature_versions (id) ON DELETE CASCADE,
    status             TEXT NOT NULL,
    changed_at         TEXT NOT NULL
);
CREATE INDEX version_status_changes_by_version
    ON version_status_changes (feature_version_id, changed_at);
INSERT INTO version_status_changes (feature_version_id, status, changed_at)
SELECT id, status, created_at FROM feature_versions;

-- Recorded by the database, so no path that creates a version or changes its status can
-- forget it. `updated_at` is the time of the change (set in the same transaction).
CREATE TRIGGER version_created AFTER INSERT ON feature_versions
BEGIN
    INSERT INTO version_status_changes (feature_version_id, status, changed_at)
    VALUES (NEW.id, NEW.status, NEW.updated_at);
END;
CREATE TRIGGER version_status_changed AFTER UPDATE OF status ON feature_versions
WHEN NEW.status <> OLD.status
BEGIN
    INSERT INTO version_status_changes (feature_version_id, status, changed_at)
    VALUES (NEW.id, NEW.status, NEW.updated_at);
END;
