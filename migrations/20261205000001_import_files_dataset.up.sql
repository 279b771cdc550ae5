-- The dataset of each file (issue 20): files recorded before datasets were
-- all companies.
ALTER TABLE import_files ADD COLUMN dataset text NOT NULL DEFAULT 'companies';
