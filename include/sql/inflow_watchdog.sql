-- Vector inflow per source for one daily partition (@partition_date), against that source's average
-- per partition over the @baseline_days partitions before it; one row per known source (vectors in
-- the baseline partitions or in the checked one).
--
-- Inflow is counted by partition (listed_date), not by arrival time (embedded_at): the daily run lands
-- a partition in one burst, so a sliding arrival window would flag every run that lands later than
-- the day before, and a backfill or reindex burst would hide a missing day or inflate the baseline.
-- Distinct image ids are counted, so shard retries and re-embeddings with another model add nothing.
-- Only rows embedded by @now count: re-running a past check gives the answer it gave then.
--
-- status: 'missing' (no vectors), 'low' (fewer than @min_vectors, or below @min_ratio x baseline) or 'ok'.
WITH per_partition AS (
  SELECT COALESCE(source, 'unknown') AS source, listed_date, COUNT(DISTINCT image_id) AS vectors
  FROM {{ dataset }}.vector_log
  WHERE listed_date BETWEEN DATE_SUB(@partition_date, INTERVAL @baseline_days DAY) AND @partition_date
    AND embedded_at <= @now
  GROUP BY 1, 2
),
per_source AS (
  SELECT source,
    SUM(IF(listed_date = @partition_date, vectors, 0)) AS observed,
    SUM(IF(listed_date < @partition_date, vectors, 0)) / @baseline_days AS baseline
  FROM per_partition
  GROUP BY source
)
SELECT source, observed, baseline,
  CASE
    WHEN observed = 0 THEN 'missing'
    WHEN observed < @min_vectors OR observed < @min_ratio * baseline THEN 'low'
    ELSE 'ok'
  END AS status
FROM per_source
ORDER BY source;
