-- A stream with several partitions (a Kafka topic): each partition's committed offset and lag,
-- as the committing replica last reported them (JSON: [{partition, committed_offset, lag}]).
-- A NATS stream, one partition, keeps using committed_offset and lag.
ALTER TABLE raw_table_streams ADD COLUMN partitions TEXT;
