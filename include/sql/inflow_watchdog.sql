-- Vector inflow per source for one daily partition (@partition_date), against that source's average
-- per partition over a baseline of @baseline_days partitions; one row per expected source.
--
-- Expected sources do not expire with the baseline: a source is expected from the first partition it
-- appeared in (in vector_log) until it is retired (@retired_sources), and @expected_sources are
-- expected even before their first vector (an empty warehouse alerts too). The baseline is the
-- @baseline_days partitions before the checked one; for a source that sent nothing in all of them,
-- the @baseline_days that ended with its last active partition, so a long outage is still measured
-- against what the source used to send.
--
-- Inflow is counted by partition (listed_date), not by arrival time (embedded_at): the daily run lands
-- a partition in one burst, so a sliding arrival window would flag every run that lands later than
-- the day before, and a backfill or reindex burst would hide a missing day or inflate the baseline.
-- Distinct image ids are counted, so shard retries and re-embeddings with another model add nothing.
-- Only rows embedded by @now count: re-running a past check gives the answer it gave then.
--
-- status: 'missing' (no vectors), 'low' (fewer than @min_vectors, or below @min_ratio x baseline) or 'ok'.
WITH history AS (
  SELECT COALESCE(source, 'unknown') AS source, listed_date, COUNT(DISTINCT image_id) AS vectors
  FROM {{ dataset }}.vector_log
  WHERE listed_date <= @partition_date AND embedded_at <= @now
  GROUP BY 1, 2
),
named_expected AS (
  SELECT source FROM UNNEST(SPLIT(@expected_sources, ',')) AS source WHERE source != ''
),
retired AS (
  SELECT source FROM UNNEST(SPLIT(@retired_sources, ',')) AS source WHERE source != ''
),
expected AS (
  SELECT source, MAX(IF(listed_date < @partition_date, listed_date, NULL)) AS last_active
  FROM history GROUP BY source
  UNION ALL
  SELECT n.source, CAST(NULL AS DATE) FROM named_expected AS n
  WHERE NOT EXISTS (SELECT 1 FROM history AS h WHERE h.source = n.source)
),
baseline_windows AS (
  SELECT source, last_active,
    IF(last_active < DATE_SUB(@partition_date, INTERVAL @baseline_days DAY), DATE_ADD(last_active, INTERVAL 1 DAY),
       @partition_date) AS baseline_end
  FROM expected AS e
  WHERE NOT EXISTS (SELECT 1 FROM retired AS r WHERE r.source = e.source)
),
per_source AS (
  SELECT w.source, w.last_active,
    SUM(IF(h.listed_date = @partition_date, h.vectors, 0)) AS observed,
    SUM(IF(h.listed_date >= DATE_SUB(w.baseline_end, INTERVAL @baseline_days DAY) AND h.listed_date < w.baseline_end,
           h.vectors, 0)) / @baseline_days AS baseline
  FROM baseline_windows AS w
  LEFT JOIN history AS h ON h.source = w.source
  GROUP BY w.source, w.last_active
)
SELECT source, CAST(COALESCE(observed, 0) AS INT64) AS observed, COALESCE(baseline, 0) AS baseline, last_active,
  CASE
    WHEN COALESCE(observed, 0) = 0 THEN 'missing'
    WHEN observed < @min_vectors OR observed < @min_ratio * baseline THEN 'low'
    ELSE 'ok'
  END AS status
FROM per_source
ORDER BY source;
