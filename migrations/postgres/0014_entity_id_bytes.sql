-- Served vectors' entity ids compare byte by byte (collation "C", as SQLite's BINARY does) instead
-- of by the database's collation: every publish inserts a million index entries at most, and
-- comparing them through a libc locale (even C.UTF-8) cost ~20 % of a COPY into this table.
-- Only equality is ever asked of this column, which no deterministic collation changes.
ALTER TABLE feature_vectors ALTER COLUMN entity_id TYPE TEXT COLLATE "C";
