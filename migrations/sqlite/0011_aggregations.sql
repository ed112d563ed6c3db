-- An aggregation feature's declaration, as JSON ({"aggregations": [...], "filter": ...}); null
-- for a feature defined by SQL (whose computation_logic is then the SQL; an aggregation
-- feature's is empty). Features are never changed after registration, so their versions
-- share it.
ALTER TABLE features ADD COLUMN declaration TEXT;
