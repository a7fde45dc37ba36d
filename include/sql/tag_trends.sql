-- Tag trends per quarter over all partitions: count, share within the dimension, change in share
-- vs the previous quarter, direction by @flat_threshold (absolute share points), rank of movers.
-- Every taxonomy tag appears in every quarter, so a tag that vanishes shows a share of 0.
-- Replaced as a whole: trends span every partition.
DELETE FROM {{ dataset }}.tag_trends WHERE TRUE;
INSERT INTO {{ dataset }}.tag_trends (
  quarter_start, quarter, dimension, tag, tag_count, dimension_total, share, previous_share, share_change,
  direction, mover_rank)
WITH settings AS (
  SELECT @flat_threshold AS flat_threshold
),
tagged AS (
  SELECT CAST(DATE_TRUNC(listed_date, QUARTER) AS DATE) AS quarter_start, dimension, tag, image_id
  FROM {{ dataset }}.image_tags
),
quarters AS (
  SELECT DISTINCT quarter_start FROM tagged
),
grid AS (
  SELECT q.quarter_start, t.dimension, t.tag
  FROM quarters AS q CROSS JOIN {{ dataset }}.taxonomy AS t
),
counts AS (
  SELECT quarter_start, dimension, tag, COUNT(DISTINCT image_id) AS tag_count
  FROM tagged GROUP BY quarter_start, dimension, tag
),
totals AS (
  SELECT quarter_start, dimension, COUNT(DISTINCT image_id) AS dimension_total
  FROM tagged GROUP BY quarter_start, dimension
),
shares AS (
  SELECT
    g.quarter_start, g.dimension, g.tag,
    COALESCE(c.tag_count, 0) AS tag_count,
    COALESCE(t.dimension_total, 0) AS dimension_total,
    IF(COALESCE(t.dimension_total, 0) = 0, 0.0, COALESCE(c.tag_count, 0) / t.dimension_total) AS share
  FROM grid AS g
  LEFT JOIN counts AS c USING (quarter_start, dimension, tag)
  LEFT JOIN totals AS t USING (quarter_start, dimension)
),
changes AS (
  SELECT *,
    LAG(share) OVER (PARTITION BY dimension, tag ORDER BY quarter_start) AS previous_share
  FROM shares
)
SELECT
  quarter_start,
  CONCAT(CAST(EXTRACT(YEAR FROM quarter_start) AS STRING), '-Q', CAST(EXTRACT(QUARTER FROM quarter_start) AS STRING)) AS quarter,
  dimension, tag, tag_count, dimension_total, share, previous_share,
  share - previous_share AS share_change,
  CASE
    WHEN previous_share IS NULL THEN 'new'
    WHEN share - previous_share > flat_threshold THEN 'rising'
    WHEN share - previous_share < -flat_threshold THEN 'falling'
    ELSE 'flat'
  END AS direction,
  RANK() OVER (PARTITION BY quarter_start ORDER BY ABS(COALESCE(share - previous_share, 0)) DESC) AS mover_rank
FROM changes CROSS JOIN settings;
