-- How many times a file was processed again by `cmd-processor replay`; the
-- row always holds the latest outcome.
ALTER TABLE import_files ADD COLUMN replays integer NOT NULL DEFAULT 0;
