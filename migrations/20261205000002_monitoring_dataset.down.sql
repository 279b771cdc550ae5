DROP INDEX monitoring_files_dataset_idx;
DROP INDEX monitoring_events_dataset_idx;
ALTER TABLE monitoring_files DROP COLUMN dataset;
ALTER TABLE monitoring_events DROP COLUMN dataset;
