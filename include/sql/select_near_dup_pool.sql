-- The fingerprints near dedup compares (vecflow.near_duplicates): today's valid images less exact
-- duplicates, and vectors_clean of the @lookback_days before. Rows without both fingerprints cannot
-- be compared and are left out (they stay clean vectors of their own). Signatures are wide: the
-- images are chosen and numbered by their keys (the latest-row window and the clean table hold no
-- lists; sorting a million 128-d lists took gigabytes), then their vector_log rows give the
-- signatures, unordered: each row's `position` in (listed_date, image_id) order, `image_code` (one
-- per image_id: an image listed again is not its own duplicate) and the pool's size let the worker
-- put each batch straight where it goes.
WITH today AS (
  SELECT v.image_id, v.listed_date, v.dhash, v.run_id, v.shard_id, v.attempt
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
    AND v.dhash IS NOT NULL
    AND NOT EXISTS (
      SELECT 1 FROM {{ dataset }}.dedup_map AS exact
      WHERE exact.listed_date = @run_date AND exact.reason = 'md5' AND exact.image_id = v.image_id)
),
earlier AS (
  SELECT image_id, listed_date, dhash, vector_run_id AS run_id, shard_id, attempt FROM {{ dataset }}.vectors_clean
  WHERE listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND listed_date < @run_date
    AND model_version = @model_version AND dhash IS NOT NULL
),
pool AS (
  SELECT
    keys.*,
    ROW_NUMBER() OVER (ORDER BY listed_date, image_id) - 1 AS position,
    DENSE_RANK() OVER (ORDER BY image_id) - 1 AS image_code,
    COUNT(*) OVER () AS pool_rows
  FROM (SELECT * FROM today UNION ALL SELECT * FROM earlier) AS keys
)
SELECT p.position, p.image_code, p.pool_rows, p.image_id, p.listed_date, p.dhash, l.edge_signature
FROM pool AS p
JOIN {{ dataset }}.vector_log AS l
  ON l.listed_date = p.listed_date AND l.image_id = p.image_id AND l.run_id = p.run_id
  AND l.shard_id = p.shard_id AND l.attempt = p.attempt
WHERE l.listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND l.listed_date <= @run_date
  AND l.model_version = @model_version AND ARRAY_LENGTH(l.edge_signature) > 0;
