ALTER TABLE import_files DROP COLUMN replays;
