-- Companies and their children, loaded by cmd-processor, plus the
-- import_files ledger that makes loading a file idempotent.

CREATE TABLE companies (
    inn                  text PRIMARY KEY,
    name                 text        NOT NULL,
    slug                 text        NOT NULL,
    ogrn                 text,
    founded_at           date,
    employees            integer CHECK (employees >= 0),
    industry             text,
    website              text,
    address_country      text,
    address_city         text,
    address_street       text,
    address_postal_code  text,
    -- Unknown top-level fields of the document, kept rather than dropped.
    extra                jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source_file_id       uuid        NOT NULL,
    -- When the api received the file this row came from: an older file
    -- processed late never overwrites a newer one.
    source_received_at   timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX companies_slug_idx ON companies (slug);

CREATE TABLE company_offices (
    company_inn  text    NOT NULL REFERENCES companies (inn) ON DELETE CASCADE,
    position     integer NOT NULL,
    city         text,
    address      text,
    headcount    integer CHECK (headcount >= 0),
    PRIMARY KEY (company_inn, position)
);

CREATE TABLE company_contacts (
    company_inn  text    NOT NULL REFERENCES companies (inn) ON DELETE CASCADE,
    position     integer NOT NULL,
    kind         text    NOT NULL CHECK (kind IN ('email', 'phone')),
    value        text    NOT NULL,
    PRIMARY KEY (company_inn, position)
);

CREATE TABLE import_files (
    file_id          uuid PRIMARY KEY,
    company          text        NOT NULL,
    s3_key           text        NOT NULL,
    sha256           text        NOT NULL,
    size_bytes       bigint      NOT NULL,
    request_id       text        NOT NULL,
    -- The event that caused this row: a redelivery of the same event is told
    -- apart from a re-post of the same content.
    source_event_id  uuid        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('loaded', 'invalid', 'failed')),
    errors           jsonb,
    rows             jsonb,
    duration_ms      bigint,
    received_at      timestamptz NOT NULL,
    processed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX import_files_company_idx ON import_files (company, received_at DESC);
