-- Every table of the pipeline. Day partitions and category clustering apply on BigQuery.
CREATE TABLE IF NOT EXISTS {{ dataset }}.catalog (
  image_id STRING NOT NULL,
  uri STRING NOT NULL,
  source STRING,
  listed_date DATE NOT NULL,
  category STRING,
  attributes STRING,  -- the catalog's other columns (title, brand, price, ...) as one JSON object
  run_id STRING,
  loaded_at TIMESTAMP
) PARTITION BY listed_date;

-- Append-only: one row per (image, model_version, run, shard attempt).
CREATE TABLE IF NOT EXISTS {{ dataset }}.vector_log (
  image_id STRING NOT NULL,
  content_md5 STRING,
  dhash INT64,
  edge_signature ARRAY<FLOAT64>,
  source STRING,
  listed_date DATE NOT NULL,
  catalog_category STRING,
  category STRING,  -- the category tag (the index partition), resolved when the shard is loaded
  model_version STRING,
  dim INT64,
  embedding ARRAY<FLOAT64>,
  embedding_norm FLOAT64,  -- L2 norm and finiteness from the embedding job: validation reads these
  embedding_finite BOOL,
  analyses STRING,  -- the job's pixel analyses and model head class, JSON keyed by analyser (vecflow.tagging)
  run_id STRING NOT NULL,
  shard_id INT64 NOT NULL,
  attempt INT64 NOT NULL,
  embedded_at TIMESTAMP NOT NULL,
  reused BOOL
) PARTITION BY listed_date CLUSTER BY category;

CREATE TABLE IF NOT EXISTS {{ dataset }}.rejects (
  image_id STRING,
  listed_date DATE NOT NULL,
  stage STRING NOT NULL,
  reason STRING NOT NULL,
  detail STRING,
  category STRING,
  run_id STRING
) PARTITION BY listed_date;

CREATE TABLE IF NOT EXISTS {{ dataset }}.dedup_map (
  image_id STRING NOT NULL,
  canonical_image_id STRING NOT NULL,
  listed_date DATE NOT NULL,
  category STRING,
  reason STRING NOT NULL,
  run_id STRING
) PARTITION BY listed_date;

-- The vectors themselves stay in vector_log (stored once): a clean row names its vector_log row
-- (vector_run_id, shard_id, attempt) and v_vectors_clean joins them back for the index stage.
CREATE TABLE IF NOT EXISTS {{ dataset }}.vectors_clean (
  image_id STRING NOT NULL,
  content_md5 STRING,
  dhash INT64,
  source STRING,
  listed_date DATE NOT NULL,
  catalog_category STRING,
  category STRING NOT NULL,
  model_version STRING NOT NULL,
  analyses STRING,  -- as vector_log.analyses: what the tagging step reads, with attributes
  attributes STRING,  -- the catalog row's attributes (JSON), as catalog.attributes
  run_id STRING,
  vector_run_id STRING,
  shard_id INT64,
  attempt INT64
) PARTITION BY listed_date CLUSTER BY category;

{#- image_tags and a retag's candidate beside it (the switch copies one into the other): one column list -#}
{% for table in ["image_tags", "image_tags_candidate"] %}
CREATE TABLE IF NOT EXISTS {{ dataset }}.{{ table }} (
  image_id STRING NOT NULL,
  listed_date DATE NOT NULL,
  dimension STRING NOT NULL,
  tag STRING NOT NULL,
  confidence FLOAT64,
  tag_source STRING NOT NULL,
  run_id STRING,
  source STRING,  -- the image's catalog source, a facet of tag_trends
  taxonomy_version STRING,  -- the taxonomy file's content hash and the head set the tags come from
  head_version STRING
) PARTITION BY listed_date CLUSTER BY dimension, tag;
{% endfor %}

CREATE TABLE IF NOT EXISTS {{ dataset }}.index_registry (
  model_version STRING NOT NULL,
  category STRING NOT NULL,
  kind STRING NOT NULL,
  date_from DATE NOT NULL,
  date_to DATE NOT NULL,
  vector_count INT64 NOT NULL,
  index_type STRING,
  path STRING NOT NULL,
  file_md5 STRING NOT NULL,
  status STRING NOT NULL,
  run_id STRING,
  created_at TIMESTAMP,
  recall_at_10 FLOAT64,
  precision_at_10 FLOAT64,
  published_at TIMESTAMP,
  gate_problem STRING
);

CREATE TABLE IF NOT EXISTS {{ dataset }}.funnel_metrics (
  stage STRING NOT NULL,
  partition_date DATE NOT NULL,
  category STRING NOT NULL,
  metric STRING NOT NULL,
  value INT64 NOT NULL,
  run_id STRING,
  recorded_at TIMESTAMP
) PARTITION BY partition_date;

-- One row per period (month or quarter) x facet x dimension x tag (include/sql/tag_trends.sql says how
-- they are computed); facet '' is the whole catalog, 'category=dress,source=shop_b' a pair.
CREATE TABLE IF NOT EXISTS {{ dataset }}.tag_trends (
  period_kind STRING NOT NULL,
  period_start DATE NOT NULL,
  period STRING NOT NULL,
  coverage FLOAT64,
  partial BOOL,
  facet_keys STRING NOT NULL,
  facet STRING NOT NULL,
  dimension STRING NOT NULL,
  tag STRING NOT NULL,
  tag_count INT64 NOT NULL,
  dimension_total INT64 NOT NULL,
  share FLOAT64 NOT NULL,
  previous_share FLOAT64,
  share_change FLOAT64,
  change_low FLOAT64,
  change_high FLOAT64,
  z_score FLOAT64,
  p_value FLOAT64,
  p_adjusted FLOAT64,
  tests_in_period INT64,
  direction STRING NOT NULL,
  mover_rank INT64,
  year_ago_share FLOAT64,
  year_ago_change FLOAT64,
  year_ago_p_adjusted FLOAT64,
  year_ago_direction STRING
);

-- Removals from the catalog (vecflow.lifecycle, the one writer): the delist feed's rows and the
-- dead-link sweep's. An image is delisted while its latest removal is not older than its latest
-- listing (v_delisted): listed again on a later day, it is back.
CREATE TABLE IF NOT EXISTS {{ dataset }}.delistings (
  image_id STRING NOT NULL,
  delisted_at TIMESTAMP NOT NULL,
  reason STRING NOT NULL,
  partition_date DATE NOT NULL,  -- the feed's partition, or the sweep's day
  origin STRING NOT NULL,  -- feed | sweep
  run_id STRING,
  recorded_at TIMESTAMP
) PARTITION BY partition_date;

-- One row per served image checked by a dead-link sweep (vecflow.lifecycle, vecflow_catalog_health).
CREATE TABLE IF NOT EXISTS {{ dataset }}.link_checks (
  image_id STRING NOT NULL,
  uri STRING NOT NULL,
  category STRING,
  checked_date DATE NOT NULL,
  outcome STRING NOT NULL,  -- ok, or the fetch layer's reason (dead_link, fetch_failed, ...)
  detail STRING,
  run_id STRING,
  checked_at TIMESTAMP
) PARTITION BY checked_date;

-- The taxonomy's tags with their dimension's declaration (written by vecflow.tagging.publish_taxonomy).
CREATE TABLE IF NOT EXISTS {{ dataset }}.taxonomy (
  dimension STRING NOT NULL,
  tag STRING NOT NULL,
  display STRING,
  dimension_display STRING,
  tag_source STRING,
  multi_label BOOL,
  taxonomy_version STRING
);

-- Tags derived from another tag (style from category).
CREATE TABLE IF NOT EXISTS {{ dataset }}.tag_derivations (
  dimension STRING NOT NULL,
  tag STRING NOT NULL,
  from_dimension STRING NOT NULL,
  from_tag STRING NOT NULL
);

-- The schema versions applied to this warehouse (vecflow.warehouse.migrate): one row per version.
CREATE TABLE IF NOT EXISTS {{ dataset }}.schema_migrations (
  version STRING NOT NULL,
  files STRING,
  applied_at TIMESTAMP
);
