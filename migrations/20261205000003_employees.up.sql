-- The employees dataset (datasets/employees): one row per person, by SNILS,
-- and their skills, replaced with the person. company_inn is not a foreign
-- key: an employee's file may be loaded before their company's.

CREATE TABLE employees (
    snils               text PRIMARY KEY,
    full_name           text        NOT NULL,
    company_inn         text        NOT NULL,
    position            text,
    hired_at            date,
    monthly_salary_rub  bigint CHECK (monthly_salary_rub >= 0),
    remote              boolean,
    email               text,
    slug                text        NOT NULL,
    source_file_id      uuid        NOT NULL,
    -- When the api received the file this row came from: an older file
    -- processed late never overwrites a newer one.
    source_received_at  timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX employees_company_inn_idx ON employees (company_inn);

CREATE TABLE employee_skills (
    employee_snils  text    NOT NULL REFERENCES employees (snils) ON DELETE CASCADE,
    position        integer NOT NULL,
    name            text    NOT NULL,
    level           integer CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (employee_snils, position)
);
