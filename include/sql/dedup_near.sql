-- Near duplicates (resized, brightened, re-encoded copies), after exact ones are removed: the staged
-- rows are each of today's images with its first near duplicate (image_id, match_id), found by
-- vecflow.near_duplicates over select_near_dup_pool.sql's fingerprints (dHash within @max_hamming
-- bits and edge-signature cosine >= @min_edge_similarity, today's images against each other and
-- vectors_clean of the lookback window). The earliest match (listed_date, image_id) is canonical; a
-- match that is itself one of today's duplicates hands on its own canonical.
DELETE FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'dhash';
INSERT INTO {{ dataset }}.dedup_map (image_id, canonical_image_id, listed_date, category, reason, run_id)
WITH today AS (
  SELECT v.image_id, v.category
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
),
first_match AS (
  SELECT image_id, match_id FROM {{ staging }}
)
SELECT f.image_id, COALESCE(g.match_id, f.match_id), @run_date, t.category, 'dhash', @run_id
FROM first_match AS f
JOIN today AS t ON t.image_id = f.image_id
LEFT JOIN first_match AS g ON g.image_id = f.match_id;
