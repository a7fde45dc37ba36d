-- One partition's funnel, one row per stage and category, for the run report.
SELECT stage, category,
  SUM(IF(metric = 'in', value, 0)) AS in_rows,
  SUM(IF(metric = 'out', value, 0)) AS out_rows,
  SUM(IF(STARTS_WITH(metric, 'dropped.'), value, 0)) AS dropped_rows
FROM {{ dataset }}.funnel_metrics
WHERE partition_date = @run_date
GROUP BY stage, category
ORDER BY stage, category;
