-- min_server_version: 20.3
-- Retention (TTL needs ClickHouse >= 19.6; applied from 20.3, where MODIFY TTL is stable).
-- Dead letters hold raw, possibly personal input: kept 30 days. The raw properties JSON of an
-- event may hold a free-text comment: cleared after 180 days, while the typed columns and the
-- comment's sentiment stay for the long-term KPIs.
ALTER TABLE {db}.dead_letters MODIFY TTL received_at + INTERVAL 30 DAY;

ALTER TABLE {db}.touchpoint_events MODIFY COLUMN properties String TTL occurred_at + INTERVAL 180 DAY;
