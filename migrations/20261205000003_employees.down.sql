DROP TABLE employee_skills;
DROP TABLE employees;
