-- The images served on @run_date (clean, not delisted, listed within the window and long tail) with
-- their catalog URI and the outcome of each one's latest link check before @run_date: what the
-- dead-link sweep checks.
WITH served AS (
  SELECT image_id, category, MAX(listed_date) AS listed_date
  FROM {{ dataset }}.vectors_clean
  WHERE listed_date BETWEEN @date_from AND @run_date AND model_version = @model_version
    -- what this day's sweep delisted is checked again: a rerun gives the same removals
    AND image_id NOT IN (
      SELECT image_id FROM {{ dataset }}.v_delisted WHERE NOT (origin = 'sweep' AND partition_date = @run_date))
  GROUP BY image_id, category
),
last_check AS (
  SELECT image_id, outcome FROM {{ dataset }}.link_checks
  WHERE checked_date < @run_date
  QUALIFY ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY checked_date DESC) = 1
)
SELECT s.image_id, s.category, k.uri, l.outcome AS last_outcome
FROM served AS s
JOIN {{ dataset }}.catalog AS k ON k.image_id = s.image_id AND k.listed_date = s.listed_date
LEFT JOIN last_check AS l ON l.image_id = s.image_id
ORDER BY s.category, s.image_id;
