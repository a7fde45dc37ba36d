-- Every balance rule of a partition's funnel, one row each, with balance = in - out - dropped (0 when
-- the rule holds): per stage and category, in = out + dropped; per link of consecutive stages, the
-- stage's out = the next stage's in (in total: the category key changes from the catalog's to the
-- model's). A link is checked when the partition has both stages (search exists only with a search
-- sink). Read whole by the funnel quality suite; funnel_violations.sql keeps the broken rules.
-- No trailing semicolon: funnel_violations.sql includes this query as a CTE.
WITH pivot AS (
  SELECT stage, category,
    CAST(SUM(IF(metric = 'in', value, 0)) AS INT64) AS in_rows,
    CAST(SUM(IF(metric = 'out', value, 0)) AS INT64) AS out_rows,
    CAST(SUM(IF(STARTS_WITH(metric, 'dropped.'), value, 0)) AS INT64) AS dropped_rows
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
  SELECT l.from_stage, l.to_stage,
    CAST(SUM(IF(p.stage = l.from_stage, p.out_rows, 0)) AS INT64) AS out_rows,
    CAST(SUM(IF(p.stage = l.to_stage, p.in_rows, 0)) AS INT64) AS next_in_rows
  FROM links AS l
  JOIN pivot AS p ON p.stage IN (l.from_stage, l.to_stage)
  GROUP BY l.from_stage, l.to_stage
  HAVING COUNTIF(p.stage = l.from_stage) > 0 AND COUNTIF(p.stage = l.to_stage) > 0
)
SELECT 'in = out + dropped' AS rule, stage, category, in_rows, out_rows, dropped_rows,
  in_rows - out_rows - dropped_rows AS balance
FROM pivot
UNION ALL
SELECT 'out = next in', CONCAT(from_stage, ' -> ', to_stage), 'all', next_in_rows, out_rows, 0,
  next_in_rows - out_rows
FROM link_counts
