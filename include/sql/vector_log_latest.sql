-- The usable slice of the append-only log: the latest run of each partition, and within it the
-- latest attempt of each shard, so retried shards and reruns never double rows downstream; an image
-- listed twice in that run (a partition delivered twice) keeps its latest embedding.
CREATE OR REPLACE VIEW {{ dataset }}.v_vector_log_latest AS
WITH latest_run AS (
  SELECT listed_date, run_id
  FROM {{ dataset }}.vector_log
  GROUP BY listed_date, run_id
  QUALIFY ROW_NUMBER() OVER (PARTITION BY listed_date ORDER BY MAX(embedded_at) DESC, run_id DESC) = 1
),
latest_attempt AS (
  SELECT listed_date, run_id, shard_id, MAX(attempt) AS attempt
  FROM {{ dataset }}.vector_log
  GROUP BY listed_date, run_id, shard_id
)
SELECT v.*
FROM {{ dataset }}.vector_log AS v
JOIN latest_run AS r ON v.listed_date = r.listed_date AND v.run_id = r.run_id
JOIN latest_attempt AS a
  ON v.listed_date = a.listed_date AND v.run_id = a.run_id AND v.shard_id = a.shard_id AND v.attempt = a.attempt
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY v.listed_date, v.image_id ORDER BY v.embedded_at DESC, v.model_version DESC, v.shard_id DESC) = 1;
