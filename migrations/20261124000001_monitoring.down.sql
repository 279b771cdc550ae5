DROP TABLE monitoring_files;
DROP TABLE monitoring_events;
