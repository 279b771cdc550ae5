-- The trace each event was published in (its `traceparent` header, when
-- the services export traces), and each file's: the first one seen.
ALTER TABLE monitoring_events ADD COLUMN trace_id text;
ALTER TABLE monitoring_files ADD COLUMN trace_id text;
