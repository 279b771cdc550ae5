DROP TABLE import_files;
DROP TABLE company_contacts;
DROP TABLE company_offices;
DROP TABLE companies;
