-- Per partition of a reindex run (its rows carry its run_id): vectors embedded, rejected when loading
-- or validating, and kept. The caller checks planned = embedded + reindex_embed rejects and
-- embedded = clean + reindex_validate rejects.
SELECT listed_date, 'embedded' AS measure, COUNT(*) AS n
FROM {{ dataset }}.v_vector_log_latest
WHERE run_id = @run_id AND run_model_version = @model_version
GROUP BY listed_date
UNION ALL
SELECT listed_date, stage, COUNT(*)
FROM {{ dataset }}.rejects
WHERE run_id = @run_id AND stage IN ('reindex_embed', 'reindex_validate')
GROUP BY listed_date, stage
UNION ALL
SELECT listed_date, 'clean', COUNT(*)
FROM {{ dataset }}.vectors_clean
WHERE run_id = @run_id AND model_version = @model_version
GROUP BY listed_date;
