-- The fingerprints near dedup compares (vecflow.near_duplicates): today's valid images less exact
-- duplicates, and vectors_clean of the @lookback_days before, unordered (vecflow.clean orders them by
-- (listed_date, image_id) itself: sorting a million 128-d lists here took gigabytes). Rows without
-- both fingerprints cannot be compared and are left out (they stay clean vectors of their own).
WITH today AS (
  SELECT v.image_id, v.listed_date, v.dhash, v.edge_signature
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
    AND NOT EXISTS (
      SELECT 1 FROM {{ dataset }}.dedup_map AS exact
      WHERE exact.listed_date = @run_date AND exact.reason = 'md5' AND exact.image_id = v.image_id)
),
earlier AS (
  SELECT image_id, listed_date, dhash, edge_signature FROM {{ dataset }}.v_vectors_clean
  WHERE listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND listed_date < @run_date
    AND model_version = @model_version
)
SELECT image_id, listed_date, dhash, edge_signature
FROM (SELECT * FROM today UNION ALL SELECT * FROM earlier)
WHERE dhash IS NOT NULL AND ARRAY_LENGTH(edge_signature) > 0;
