-- Per dimension, the rows image_tags serves and the rows a retag's candidate holds: a dimension that
-- had tags and would have none refuses the switch.
WITH serving AS (
  SELECT dimension, COUNT(*) AS n FROM {{ dataset }}.image_tags GROUP BY dimension
),
candidate AS (
  SELECT dimension, COUNT(*) AS n FROM {{ dataset }}.image_tags_candidate GROUP BY dimension
)
SELECT COALESCE(s.dimension, c.dimension) AS dimension,
  COALESCE(s.n, 0) AS serving_rows, COALESCE(c.n, 0) AS candidate_rows
FROM serving AS s
FULL OUTER JOIN candidate AS c ON c.dimension = s.dimension
ORDER BY dimension;
