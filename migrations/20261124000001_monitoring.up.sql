-- cmd-monitoring's own record of the pipeline: every event it has seen and
-- each file's current state. It lives in Postgres so that a restarted
-- monitor answers at once instead of replaying every topic.

CREATE TABLE monitoring_events (
    -- Outcomes re-emitted after a processor crash carry the same id, so
    -- the primary key is what keeps them from being counted twice.
    event_id     uuid PRIMARY KEY,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    request_id   text        NOT NULL,
    company      text,
    file_id      uuid,
    topic        text        NOT NULL,
    "partition"  integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    -- The event's own fields (errors, rows, s3 key ...), as published.
    details      jsonb       NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX monitoring_events_file_idx ON monitoring_events (file_id, occurred_at);
CREATE INDEX monitoring_events_request_idx ON monitoring_events (request_id, occurred_at);
CREATE INDEX monitoring_events_time_idx ON monitoring_events (occurred_at);

CREATE TABLE monitoring_files (
    file_id      uuid PRIMARY KEY,
    company      text,
    request_id   text        NOT NULL,
    filename     text,
    status       text        NOT NULL
                 CHECK (status IN ('received', 'loaded', 'invalid', 'dead_lettered')),
    -- When the event that set `status` happened: events of different topics
    -- arrive in any order, the latest one decides.
    status_at    timestamptz NOT NULL,
    received_at  timestamptz,
    loaded_at    timestamptz,
    -- received_at → loaded_at, set once both are known.
    latency_ms   double precision,
    events       integer     NOT NULL DEFAULT 0
);

CREATE INDEX monitoring_files_company_idx ON monitoring_files (company, status_at DESC);
CREATE INDEX monitoring_files_loaded_idx ON monitoring_files (loaded_at);
