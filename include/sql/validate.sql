-- Vectors of the partition's latest run with @model_version that must not go further, with the reason;
-- the partition's rejects of @reject_stage ('validate' daily, 'reindex_validate' for a new model) are replaced.
DELETE FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = @reject_stage;
INSERT INTO {{ dataset }}.rejects (image_id, listed_date, stage, reason, detail, category, run_id)
WITH checked AS (
  SELECT
    image_id, listed_date, category, model_version, dim,
    ARRAY_LENGTH(embedding) AS length,
    EXISTS(SELECT 1 FROM UNNEST(embedding) AS x WHERE x IS NULL OR IS_NAN(x) OR IS_INF(x)) AS non_finite,
    SQRT((SELECT SUM(x * x) FROM UNNEST(embedding) AS x)) AS norm,
    category IN (SELECT tag FROM {{ dataset }}.taxonomy WHERE dimension = 'category') AS known_category
  FROM {{ dataset }}.v_vector_log_latest
  WHERE listed_date = @run_date AND run_model_version = @model_version
),
judged AS (
  SELECT *,
    CASE
      WHEN model_version IS NULL THEN 'missing_model_version'
      WHEN embedding_missing THEN 'missing_vector'
      WHEN length != @expected_dim OR dim != @expected_dim THEN 'wrong_dim'
      WHEN non_finite THEN 'non_finite'
      WHEN norm < @min_norm THEN 'zero_norm'
      WHEN norm > @max_norm THEN 'bad_norm'
      WHEN NOT known_category OR category IS NULL THEN 'unknown_category'
    END AS reason
  FROM (SELECT *, length IS NULL AS embedding_missing FROM checked)
)
SELECT
  image_id, listed_date, @reject_stage, reason,
  CASE reason
    WHEN 'wrong_dim' THEN CONCAT('dim ', CAST(COALESCE(length, -1) AS STRING), ' != ', CAST(@expected_dim AS STRING))
    WHEN 'zero_norm' THEN CONCAT('norm ', CAST(norm AS STRING))
    WHEN 'bad_norm' THEN CONCAT('norm ', CAST(norm AS STRING))
    WHEN 'unknown_category' THEN CONCAT('category ', COALESCE(category, 'NULL'))
  END,
  category, @run_id
FROM judged
WHERE reason IS NOT NULL;
