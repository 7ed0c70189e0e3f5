-- One row per valid touchpoint event.
-- Deduplicated by the engine on (day of occurred_at, event_id): a redelivered event carries the
-- same bytes, so it lands in the same partition and sorting key and is collapsed by merges.
-- Read with FINAL (or GROUP BY event_id) when a query must not see duplicates that are not
-- merged yet. No Nullable column (slow to write and to read on 18.16): absent text is '', absent
-- codes and money 0, absent durations -1; has_sentiment says whether sentiment was computed.
-- All times are UTC.
CREATE TABLE IF NOT EXISTS {db}.touchpoint_events
(
    event_id String,
    event_type String,
    schema_version UInt16,
    occurred_at DateTime('UTC'),
    occurred_ms UInt64,
    customer_id String,
    anonymous_id String,
    session_id String,
    channel String,
    touchpoint String,
    journey_stage String,
    stage_derived UInt8,
    segment String,
    timezone String,
    survey String,
    score Int16,
    cart_id String,
    cart_value Float64,
    order_id String,
    order_value Float64,
    currency String,
    resolved UInt8,
    wait_s Float32,
    load_time_ms Int32,
    http_status UInt16,
    product_id String,
    error_code String,
    reason String,
    sentiment Float32,
    has_sentiment UInt8,
    properties String,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), event_id);
