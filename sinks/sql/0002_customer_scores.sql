-- Every score update. A redelivered update has the same (customer_id, event_time_ms,
-- updated_ms) and is collapsed by merges; the latest score of a customer is
-- argMax(<column>, updated_ms) GROUP BY customer_id (exact with or without merges).
CREATE TABLE IF NOT EXISTS {db}.customer_scores
(
    customer_id String,
    experience_score Float64,
    churn_risk Float64,
    journey_stage String,
    previous_stage String,
    explanation String,
    event_time DateTime('UTC'),
    event_time_ms UInt64,
    updated_at DateTime('UTC'),
    updated_ms UInt64,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(updated_at)
ORDER BY (customer_id, updated_ms, event_time_ms);
