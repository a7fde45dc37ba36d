-- Near duplicates by dHash (resized, brightened, re-encoded copies), after exact ones are removed.
-- Candidates come from a banded (LSH) join, not all pairs: the 64 bits are cut into
-- @max_hamming + 1 bands of @band_bits bits (the last takes the rest), so two hashes that differ in
-- at most @max_hamming bits agree on at least one whole band. A candidate is a duplicate when its Hamming distance is within @max_hamming and
-- its edge signatures have cosine >= @min_edge_similarity (64 bits alone cannot tell similar
-- garments apart). Today's images are compared with each other and with vectors_clean of the
-- @lookback_days before. The earliest match (listed_date, image_id) is canonical; a match that is
-- itself one of today's duplicates hands on its own canonical.
DELETE FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'dhash';
INSERT INTO {{ dataset }}.dedup_map (image_id, canonical_image_id, listed_date, category, reason, run_id)
WITH today AS (
  SELECT v.image_id, v.listed_date, v.category, v.dhash
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
    AND NOT EXISTS (
      SELECT 1 FROM {{ dataset }}.dedup_map AS exact
      WHERE exact.listed_date = @run_date AND exact.reason = 'md5' AND exact.image_id = v.image_id)
),
earlier AS (
  SELECT image_id, listed_date, dhash, edge_signature FROM {{ dataset }}.vectors_clean
  WHERE listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND listed_date < @run_date
    AND model_version = @model_version
),
pool AS (
  SELECT image_id, listed_date, dhash FROM today
  UNION ALL
  SELECT image_id, listed_date, dhash FROM earlier
),
-- signatures are wide: they are read only for the pairs that pass the Hamming check
signatures AS (
  SELECT image_id, edge_signature FROM {{ dataset }}.v_vector_log_latest
  WHERE listed_date = @run_date AND run_model_version = @model_version
  UNION ALL
  SELECT image_id, edge_signature FROM earlier
),
band_layout AS (
  SELECT band, band * @band_bits AS first_bit,
    IF(band = @max_hamming, 64 - band * @band_bits, @band_bits) AS width
  FROM UNNEST(GENERATE_ARRAY(0, @max_hamming)) AS band
),
bands AS (
  SELECT p.image_id, p.listed_date, p.dhash, l.band,
    (p.dhash >> l.first_bit) & ((CAST(1 AS INT64) << l.width) - 1) AS band_value
  FROM pool AS p CROSS JOIN band_layout AS l
  WHERE p.dhash IS NOT NULL
),
-- Hamming distance is checked on the band join itself, so only close pairs reach the signatures
candidates AS (
  SELECT DISTINCT a.image_id, b.image_id AS match_id, b.listed_date AS match_date
  FROM bands AS a
  JOIN bands AS b ON a.band = b.band AND a.band_value = b.band_value
  WHERE a.listed_date = @run_date
    AND (b.listed_date < @run_date OR b.image_id < a.image_id)
    AND BIT_COUNT(a.dhash ^ b.dhash) <= @max_hamming
),
matches AS (
  SELECT c.image_id, c.match_id, c.match_date
  FROM candidates AS c
  JOIN signatures AS t ON t.image_id = c.image_id
  JOIN signatures AS m ON m.image_id = c.match_id
  WHERE 1 - COSINE_DISTANCE(t.edge_signature, m.edge_signature) >= @min_edge_similarity
),
first_match AS (
  SELECT image_id, match_id FROM matches
  QUALIFY ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY match_date, match_id) = 1
)
SELECT f.image_id, COALESCE(g.match_id, f.match_id), @run_date, t.category, 'dhash', @run_id
FROM first_match AS f
JOIN today AS t ON t.image_id = f.image_id
LEFT JOIN first_match AS g ON g.image_id = f.match_id;
