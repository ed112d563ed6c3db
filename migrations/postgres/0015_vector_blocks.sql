-- A generation's vectors in blocks of neighbouring entity ids, one row per block, keyed by the
-- block's first id (src/store/blocks.rs): Postgres pays for every row and index entry a publish
-- inserts, and 1M vectors in blocks of ~16 wrote in a third of the time one row each took.
-- A block's entries are, per entity in id order: the id's length (4 bytes, big-endian), its
-- UTF-8 bytes, the values' length, their bytes. Every existing row becomes a block of one.
CREATE TABLE feature_vector_blocks (
    generation BIGINT NOT NULL,
    first_id   TEXT COLLATE "C" NOT NULL,
    entries    BYTEA NOT NULL,
    PRIMARY KEY (generation, first_id)
);

INSERT INTO feature_vector_blocks (generation, first_id, entries)
SELECT generation, entity_id,
       int4send(octet_length(convert_to(entity_id, 'UTF8'))) || convert_to(entity_id, 'UTF8')
       || int4send(octet_length(convert_to(feature_values, 'UTF8')))
       || convert_to(feature_values, 'UTF8')
FROM feature_vectors;

DROP TABLE feature_vectors;
