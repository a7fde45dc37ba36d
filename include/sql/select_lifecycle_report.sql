-- The run report's catalog lifecycle: the partition's removals by origin and reason, and the
-- outcomes of the latest dead-link sweep up to the partition.
SELECT 'removed' AS kind, origin AS what, reason AS outcome, COUNT(*) AS images
FROM {{ dataset }}.delistings
WHERE partition_date = @run_date
GROUP BY origin, reason
UNION ALL
SELECT 'link sweep', CAST(checked_date AS STRING), outcome, COUNT(*)
FROM {{ dataset }}.link_checks
WHERE checked_date = (SELECT MAX(checked_date) FROM {{ dataset }}.link_checks WHERE checked_date <= @run_date)
GROUP BY checked_date, outcome
ORDER BY kind DESC, what, outcome;
