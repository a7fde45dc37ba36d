-- Columns added after a table's first release: a warehouse created by an earlier version gains them
-- here (create_tables already has them for a new one), so no partition is lost to an upgrade.
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS edge_signature ARRAY<FLOAT64>;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS edge_signature ARRAY<FLOAT64>;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS recall_at_10 FLOAT64;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS precision_at_10 FLOAT64;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS published_at TIMESTAMP;
ALTER TABLE {{ dataset }}.alerts ADD COLUMN IF NOT EXISTS alert_id STRING;
ALTER TABLE {{ dataset }}.alerts ADD COLUMN IF NOT EXISTS attempts INT64;
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS reused BOOL;
ALTER TABLE {{ dataset }}.catalog ADD COLUMN IF NOT EXISTS attributes STRING;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS attributes STRING;
