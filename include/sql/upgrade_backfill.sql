-- What rows written by an earlier version lack, filled once when the warehouse is migrated (on a
-- warehouse this version created, both find nothing): vector_log's scalars of the embedding job
-- (norm, finiteness), and the vector_log row each vectors_clean row was kept from.
UPDATE {{ dataset }}.vector_log
SET
  embedding_norm = (SELECT SQRT(SUM(x * x)) FROM UNNEST(embedding) AS x),
  embedding_finite = NOT EXISTS(SELECT 1 FROM UNNEST(embedding) AS x WHERE x IS NULL OR IS_NAN(x) OR IS_INF(x))
WHERE embedding_norm IS NULL AND embedding IS NOT NULL;
UPDATE {{ dataset }}.vectors_clean AS c
SET vector_run_id = v.run_id, shard_id = v.shard_id, attempt = v.attempt
FROM {{ dataset }}.v_vector_log_latest AS v
WHERE c.vector_run_id IS NULL
  AND v.listed_date = c.listed_date AND v.image_id = c.image_id AND v.model_version = c.model_version;
UPDATE {{ dataset }}.image_tags AS t
SET source = c.source
FROM {{ dataset }}.catalog AS c
WHERE t.source IS NULL AND c.listed_date = t.listed_date AND c.image_id = t.image_id;
