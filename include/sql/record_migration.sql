-- A schema version applied (vecflow.warehouse.migrate); the next run sees it and issues no DDL.
INSERT INTO {{ dataset }}.schema_migrations (version, files, applied_at)
VALUES (@version, @files, CURRENT_TIMESTAMP());
