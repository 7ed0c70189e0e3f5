-- Expected 12-month customer value (docs/scoring.md "Customer value"): ScoreUpdate.clv_12m,
-- in order-value units, >= 0. Not Nullable (the schema has none, docs/clickhouse.md): -1 means
-- unknown, both for an update published without clv_12m and for rows written before this
-- migration; read it with avgIf(clv_12m, clv_12m >= 0). ClickHouse 18.16 has no ADD COLUMN IF
-- NOT EXISTS: the migration runner checks system.columns itself and runs the statement without
-- IF NOT EXISTS when the column is missing (sinks/migrations.py), so a repeated run is a no-op.
ALTER TABLE {db}.customer_scores ADD COLUMN IF NOT EXISTS clv_12m Float64 DEFAULT -1;
