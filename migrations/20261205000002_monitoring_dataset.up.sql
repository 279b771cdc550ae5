-- The dataset of each event and file the monitor has seen, so its numbers
-- can be read per dataset (/stats?dataset=). Before every event named its
-- dataset only FileExtractSuccess did, in its details; the other events of
-- a file take their file's, and refused uploads of that time stay unknown.
ALTER TABLE monitoring_events ADD COLUMN dataset text;
ALTER TABLE monitoring_files ADD COLUMN dataset text;

UPDATE monitoring_events SET dataset = details->>'dataset'
WHERE event_type = 'FileExtractSuccess';

UPDATE monitoring_events e SET dataset = s.dataset
FROM monitoring_events s
WHERE e.dataset IS NULL AND e.file_id = s.file_id
  AND s.event_type = 'FileExtractSuccess';

UPDATE monitoring_files f SET dataset = s.dataset
FROM monitoring_events s
WHERE f.file_id = s.file_id AND s.event_type = 'FileExtractSuccess';

CREATE INDEX monitoring_events_dataset_idx ON monitoring_events (dataset, occurred_at);
CREATE INDEX monitoring_files_dataset_idx ON monitoring_files (dataset, status_at DESC);
