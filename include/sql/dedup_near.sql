-- Near duplicates by dHash (resized, brightened, re-encoded copies), after exact ones are removed.
-- Candidates come from a banded (LSH) join, not all pairs: the 64 bits are cut into @bands =
-- @max_hamming + 2 bands of @band_bits bits (the last takes the rest; vecflow.clean.dhash_bands), so
-- two hashes that differ in at most @max_hamming bits agree on at least two bands, and the join is
-- on every pair of bands. A pair is a wide key: buckets stay near empty, so the join grows with the
-- rows (single 16-bit bands grew with their square).
-- A candidate is a duplicate when its Hamming distance is within @max_hamming and
-- its edge signatures have cosine >= @min_edge_similarity (64 bits alone cannot tell similar
-- garments apart). Today's images are compared with each other and with vectors_clean of the
-- @lookback_days before. The earliest match (listed_date, image_id) is canonical; a match that is
-- itself one of today's duplicates hands on its own canonical.
DELETE FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'dhash';
INSERT INTO {{ dataset }}.dedup_map (image_id, canonical_image_id, listed_date, category, reason, run_id)
WITH today AS (
  SELECT v.image_id, v.listed_date, v.category, v.dhash, v.run_id, v.shard_id, v.attempt
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
    AND NOT EXISTS (
      SELECT 1 FROM {{ dataset }}.dedup_map AS exact
      WHERE exact.listed_date = @run_date AND exact.reason = 'md5' AND exact.image_id = v.image_id)
),
earlier AS (
  SELECT image_id, listed_date, dhash FROM {{ dataset }}.vectors_clean
  WHERE listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND listed_date < @run_date
    AND model_version = @model_version
),
pool AS (
  SELECT image_id, listed_date, dhash FROM today
  UNION ALL
  SELECT image_id, listed_date, dhash FROM earlier
),
band_layout AS (
  SELECT band, band * @band_bits AS first_bit,
    IF(band = @bands - 1, 64 - band * @band_bits, @band_bits) AS width
  FROM UNNEST(GENERATE_ARRAY(0, @bands - 1)) AS band
),
band_pairs AS (
  SELECT x.band * @bands + y.band AS band_pair, x.first_bit AS first_bit, x.width AS first_width,
    y.first_bit AS second_bit, y.width AS second_width
  FROM band_layout AS x JOIN band_layout AS y ON x.band < y.band
),
-- one INT64 key per hash and pair of bands: the pair, then both bands' bits (each at most 24 bits)
keys AS (
  SELECT p.image_id, p.listed_date, p.dhash,
    (l.band_pair << 48)
      | (((p.dhash >> l.first_bit) & ((CAST(1 AS INT64) << l.first_width) - 1)) << 24)
      | ((p.dhash >> l.second_bit) & ((CAST(1 AS INT64) << l.second_width) - 1)) AS band_key
  FROM pool AS p CROSS JOIN band_pairs AS l
  WHERE p.dhash IS NOT NULL
),
-- Hamming distance is checked on the band join itself, so only close pairs reach the signatures
candidates AS (
  SELECT DISTINCT a.image_id, b.image_id AS match_id, b.listed_date AS match_date
  FROM keys AS a
  JOIN keys AS b ON a.band_key = b.band_key
  WHERE a.listed_date = @run_date
    AND (b.listed_date < @run_date OR b.image_id < a.image_id)
    AND b.image_id != a.image_id  -- an image listed again is not its own duplicate (as in dedup_exact)
    AND BIT_COUNT(a.dhash ^ b.dhash) <= @max_hamming
),
-- signatures are wide: they are read only for the images of pairs that passed the Hamming check,
-- from their vector_log rows
paired AS (
  SELECT image_id FROM candidates
  UNION DISTINCT
  SELECT match_id FROM candidates
),
signatures AS (
  SELECT t.image_id, l.edge_signature
  FROM today AS t
  JOIN {{ dataset }}.vector_log AS l
    ON l.listed_date = t.listed_date AND l.image_id = t.image_id AND l.run_id = t.run_id
    AND l.shard_id = t.shard_id AND l.attempt = t.attempt
  WHERE l.listed_date = @run_date AND t.image_id IN (SELECT image_id FROM paired)
  UNION ALL
  SELECT image_id, edge_signature FROM {{ dataset }}.v_vectors_clean
  WHERE listed_date >= DATE_SUB(@run_date, INTERVAL @lookback_days DAY) AND listed_date < @run_date
    AND model_version = @model_version AND image_id IN (SELECT image_id FROM paired)
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
