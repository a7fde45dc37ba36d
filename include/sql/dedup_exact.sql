-- Exact duplicates by content MD5, within the day and against earlier days: the earliest listed
-- image (then the smallest image_id) is canonical. image_ids are unique per partition (plan stage).
DELETE FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'md5';
INSERT INTO {{ dataset }}.dedup_map (image_id, canonical_image_id, listed_date, category, reason, run_id)
WITH valid AS (
  SELECT v.image_id, v.content_md5, v.listed_date, v.category
  FROM {{ dataset }}.v_vector_log_latest AS v
  WHERE {% include "_valid_vectors.sql" %}
),
candidates AS (
  SELECT image_id, content_md5, listed_date, FALSE AS is_today FROM {{ dataset }}.vectors_clean
  WHERE listed_date < @run_date AND model_version = @model_version
  UNION ALL
  SELECT image_id, content_md5, listed_date, TRUE AS is_today FROM valid
),
ranked AS (
  SELECT image_id, is_today,
    FIRST_VALUE(image_id) OVER (PARTITION BY content_md5 ORDER BY listed_date, image_id) AS canonical_image_id
  FROM candidates
)
SELECT r.image_id, r.canonical_image_id, @run_date, v.category, 'md5', @run_id
FROM ranked AS r
JOIN valid AS v ON v.image_id = r.image_id
WHERE r.is_today AND r.image_id != r.canonical_image_id;
