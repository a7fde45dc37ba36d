-- The usable slice of the append-only log, per model: the latest run of each (partition, model), and
-- within it the latest attempt of each shard, so retried shards and reruns never double rows
-- downstream; an image listed twice in that run (a partition delivered twice) keeps its latest
-- embedding. A run's model is the one its rows name (rows without one stay with their run, so
-- validate can reject them), which keeps a reindex with a new model beside the daily runs.
CREATE OR REPLACE VIEW {{ dataset }}.v_vector_log_latest AS
WITH runs AS (
  SELECT listed_date, run_id, MAX(model_version) AS run_model_version, MAX(embedded_at) AS last_embedded_at
  FROM {{ dataset }}.vector_log
  GROUP BY listed_date, run_id
),
latest_run AS (
  SELECT listed_date, run_id, run_model_version
  FROM runs
  WHERE TRUE  -- BigQuery wants a WHERE, GROUP BY or HAVING beside QUALIFY
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY listed_date, run_model_version ORDER BY last_embedded_at DESC, run_id DESC) = 1
),
latest_attempt AS (
  SELECT listed_date, run_id, shard_id, MAX(attempt) AS attempt
  FROM {{ dataset }}.vector_log
  GROUP BY listed_date, run_id, shard_id
)
SELECT v.*, r.run_model_version
FROM {{ dataset }}.vector_log AS v
JOIN latest_run AS r ON v.listed_date = r.listed_date AND v.run_id = r.run_id
JOIN latest_attempt AS a
  ON v.listed_date = a.listed_date AND v.run_id = a.run_id AND v.shard_id = a.shard_id AND v.attempt = a.attempt
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY v.listed_date, r.run_model_version, v.image_id ORDER BY v.embedded_at DESC, v.shard_id DESC) = 1;
