-- Control groups (docs/alerts.md): control = 1 marks a control alert, one that passed the policy
-- but was withheld by its rule's control_share (recorded here, never sent). Rows written before
-- this migration read 0 (sent). ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: the migration
-- runner checks system.columns itself and runs the statement without IF NOT EXISTS when the
-- column is missing (sinks/migrations.py), so a repeated run is a no-op on every version.
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS control UInt8 DEFAULT 0;
