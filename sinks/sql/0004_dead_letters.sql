-- Input that failed validation, for the ops view of bad input. Deduplicated on the source
-- position (topic, partition, offset) of the rejected message; received_at is the time the
-- validator saw it and travels with the dead letter, so a redelivery keeps its partition.
-- source_partition / source_offset are -1 when the source position is unknown.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    received_at DateTime('UTC'),
    code String,
    message String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    raw String,
    raw_size UInt32,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset);
