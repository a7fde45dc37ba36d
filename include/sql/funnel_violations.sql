-- Stages of a partition where in != out + dropped, or where a stage's output is not the next
-- stage's input (compared in total: the category key changes from the catalog's to the model's).
-- A link is checked when the partition has both stages (search exists only with a search sink).
-- An empty result means the funnel balances.
WITH pivot AS (
  SELECT stage, category,
    SUM(IF(metric = 'in', value, 0)) AS in_rows,
    SUM(IF(metric = 'out', value, 0)) AS out_rows,
    SUM(IF(STARTS_WITH(metric, 'dropped.'), value, 0)) AS dropped_rows
  FROM {{ dataset }}.funnel_metrics
  WHERE partition_date = @run_date
  GROUP BY stage, category
),
links AS (
  SELECT 'catalog' AS from_stage, 'embed' AS to_stage UNION ALL
  SELECT 'embed', 'validate' UNION ALL
  SELECT 'validate', 'dedup' UNION ALL
  SELECT 'dedup', 'index' UNION ALL
  SELECT 'dedup', 'search'
),
link_counts AS (
  SELECT l.from_stage, l.to_stage, 'all' AS category,
    SUM(IF(p.stage = l.from_stage, p.out_rows, 0)) AS out_rows,
    SUM(IF(p.stage = l.to_stage, p.in_rows, 0)) AS next_in_rows
  FROM links AS l
  JOIN pivot AS p ON p.stage IN (l.from_stage, l.to_stage)
  GROUP BY l.from_stage, l.to_stage
  HAVING COUNTIF(p.stage = l.from_stage) > 0 AND COUNTIF(p.stage = l.to_stage) > 0
)
SELECT stage, category, 'in != out + dropped' AS problem, in_rows, out_rows, dropped_rows
FROM pivot
WHERE in_rows != out_rows + dropped_rows
UNION ALL
SELECT CONCAT(from_stage, ' -> ', to_stage), category, 'out of one stage != in of the next',
       next_in_rows, out_rows, NULL
FROM link_counts
WHERE out_rows != next_in_rows
ORDER BY 1, 2;
