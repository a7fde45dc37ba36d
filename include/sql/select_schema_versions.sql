-- The schema versions this warehouse has had applied, newest first.
SELECT version, files, applied_at FROM {{ dataset }}.schema_migrations ORDER BY applied_at DESC;
