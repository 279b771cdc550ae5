ALTER TABLE import_files DROP COLUMN dataset;
