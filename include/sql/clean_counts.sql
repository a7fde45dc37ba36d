-- What the clean stage kept and dropped for a partition (lineage metadata and logs).
SELECT
  (SELECT COUNT(*) FROM {{ dataset }}.vectors_clean
   WHERE listed_date = @run_date AND model_version = @model_version) AS vectors_clean,
  (SELECT COUNT(*) FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = 'validate') AS rejected,
  (SELECT COUNT(*) FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'md5') AS exact_duplicates,
  (SELECT COUNT(*) FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date AND reason = 'dhash') AS near_duplicates;
