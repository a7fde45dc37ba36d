-- Partitions with clean vectors, per model: a model switch needs the new model to cover every
-- partition the serving model covers.
SELECT model_version, listed_date, COUNT(*) AS vectors
FROM {{ dataset }}.vectors_clean
WHERE model_version IN UNNEST(@model_versions)
GROUP BY model_version, listed_date
ORDER BY model_version, listed_date;
