ALTER TABLE monitoring_files DROP COLUMN trace_id;
ALTER TABLE monitoring_events DROP COLUMN trace_id;
