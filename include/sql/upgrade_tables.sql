-- Columns added after a table's first release: a warehouse created by an earlier version gains them
-- here (create_tables already has them for a new one), so no partition is lost to an upgrade.
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS edge_signature ARRAY<FLOAT64>;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS recall_at_10 FLOAT64;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS precision_at_10 FLOAT64;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS published_at TIMESTAMP;
ALTER TABLE {{ dataset }}.index_registry ADD COLUMN IF NOT EXISTS gate_problem STRING;
ALTER TABLE {{ dataset }}.alerts ADD COLUMN IF NOT EXISTS alert_id STRING;
ALTER TABLE {{ dataset }}.alerts ADD COLUMN IF NOT EXISTS attempts INT64;
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS reused BOOL;
ALTER TABLE {{ dataset }}.catalog ADD COLUMN IF NOT EXISTS attributes STRING;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS attributes STRING;
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS embedding_norm FLOAT64;
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS embedding_finite BOOL;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS vector_run_id STRING;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS shard_id INT64;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS attempt INT64;
-- vectors are stored once, in vector_log: vectors_clean names its vector_log row instead
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS embedding;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS edge_signature;
ALTER TABLE {{ dataset }}.image_tags ADD COLUMN IF NOT EXISTS source STRING;
-- tag_trends by period and facet (it is recomputed as a whole by the next trends run)
ALTER TABLE {{ dataset }}.tag_trends DROP COLUMN IF EXISTS quarter_start;
ALTER TABLE {{ dataset }}.tag_trends DROP COLUMN IF EXISTS quarter;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS period_kind STRING;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS period_start DATE;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS period STRING;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS coverage FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS partial BOOL;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS facet_keys STRING;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS facet STRING;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS change_low FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS change_high FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS z_score FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS p_value FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS p_adjusted FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS tests_in_period INT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS year_ago_share FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS year_ago_change FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS year_ago_p_adjusted FLOAT64;
ALTER TABLE {{ dataset }}.tag_trends ADD COLUMN IF NOT EXISTS year_ago_direction STRING;
-- tags in long form: what the tagging step reads, and the version image_tags rows come from
ALTER TABLE {{ dataset }}.vector_log ADD COLUMN IF NOT EXISTS analyses STRING;
ALTER TABLE {{ dataset }}.vectors_clean ADD COLUMN IF NOT EXISTS analyses STRING;
ALTER TABLE {{ dataset }}.image_tags ADD COLUMN IF NOT EXISTS taxonomy_version STRING;
ALTER TABLE {{ dataset }}.image_tags ADD COLUMN IF NOT EXISTS head_version STRING;
ALTER TABLE {{ dataset }}.taxonomy ADD COLUMN IF NOT EXISTS dimension_display STRING;
ALTER TABLE {{ dataset }}.taxonomy ADD COLUMN IF NOT EXISTS tag_source STRING;
ALTER TABLE {{ dataset }}.taxonomy ADD COLUMN IF NOT EXISTS multi_label BOOL;
ALTER TABLE {{ dataset }}.taxonomy ADD COLUMN IF NOT EXISTS taxonomy_version STRING;
