-- Vectors of the partition's latest run with @model_version that must not go further, with the reason;
-- the partition's rejects of @reject_stage ('validate' daily, 'reindex_validate' for a new model) are replaced.
DELETE FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = @reject_stage;
INSERT INTO {{ dataset }}.rejects (image_id, listed_date, stage, reason, detail, category, run_id)
-- Only scalars are read: the embedding job's dim, norm and finiteness of each vector (the vector
-- itself is not read here; unnesting it per row was most of the clean stage's time).
WITH checked AS (
  SELECT
    image_id, listed_date, catalog_category, category, model_version, dim, embedding_norm AS norm, embedding_finite AS finite,
    category IN (SELECT tag FROM {{ dataset }}.taxonomy WHERE dimension = 'category') AS known_category
  FROM {{ dataset }}.v_vector_log_latest
  WHERE listed_date = @run_date AND run_model_version = @model_version
),
judged AS (
  SELECT *,
    CASE
      WHEN model_version IS NULL THEN 'missing_model_version'
      WHEN finite IS NULL OR dim IS NULL THEN 'missing_vector'
      WHEN dim != @expected_dim THEN 'wrong_dim'
      WHEN NOT finite THEN 'non_finite'  -- its norm is NaN or inf (NULL once a NaN passed through pandas)
      WHEN norm IS NULL THEN 'missing_vector'
      WHEN norm < @min_norm THEN 'zero_norm'
      WHEN norm > @max_norm THEN 'bad_norm'
      WHEN NOT known_category OR category IS NULL THEN 'unknown_category'
    END AS reason
  FROM checked
)
SELECT
  image_id, listed_date, @reject_stage, reason,
  CASE reason
    WHEN 'wrong_dim' THEN CONCAT('dim ', CAST(dim AS STRING), ' != ', CAST(@expected_dim AS STRING))
    WHEN 'zero_norm' THEN CONCAT('norm ', CAST(norm AS STRING))
    WHEN 'bad_norm' THEN CONCAT('norm ', CAST(norm AS STRING))
    WHEN 'unknown_category' THEN CONCAT('catalog category ', COALESCE(CONCAT('\'', catalog_category, '\''), 'NULL'),
      ' names no category tag, and no model or head gave one')
  END,
  category, @run_id
FROM judged
WHERE reason IS NOT NULL;
