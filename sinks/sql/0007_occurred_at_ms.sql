-- min_server_version: 21.1
-- Millisecond event time as DateTime64 where the server has it, computed from occurred_ms on
-- insert (the writer sends the same columns to every server version).
ALTER TABLE {db}.touchpoint_events
    ADD COLUMN IF NOT EXISTS occurred_at64 DateTime64(3, 'UTC')
    MATERIALIZED fromUnixTimestamp64Milli(toInt64(occurred_ms), 'UTC');
