-- Counts people look at after a run: rejects by stage and reason, duplicates by reason.
SELECT 'rejects' AS kind, CONCAT(stage, '.', reason) AS name, COUNT(*) AS value
FROM {{ dataset }}.rejects GROUP BY stage, reason
UNION ALL
SELECT 'duplicates', reason, COUNT(*) FROM {{ dataset }}.dedup_map GROUP BY reason
UNION ALL
SELECT 'index_vectors', category, SUM(vector_count) FROM {{ dataset }}.index_registry
WHERE kind = 'day' GROUP BY category
UNION ALL
SELECT 'index_files', category, COUNT(*) FROM {{ dataset }}.index_registry
WHERE kind = 'day' GROUP BY category
ORDER BY 1, 2;
