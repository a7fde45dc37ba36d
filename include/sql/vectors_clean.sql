-- The partition's canonical, valid vectors of @model_version: replaced as a whole so reruns leave the
-- same rows (a reindex writes a new model's rows beside the serving model's). The catalog's
-- attributes of the image come along. Ids and scalars only: each row names the vector_log row
-- (vector_run_id, shard_id, attempt) its vector stays in (v_vectors_clean joins it back).
DELETE FROM {{ dataset }}.vectors_clean WHERE listed_date = @run_date AND model_version = @model_version;
INSERT INTO {{ dataset }}.vectors_clean (
  image_id, content_md5, dhash, source, listed_date, catalog_category, category, model_version, analyses,
  attributes, run_id, vector_run_id, shard_id, attempt)
SELECT
  v.image_id, v.content_md5, v.dhash, v.source, v.listed_date, v.catalog_category, v.category,
  v.model_version, v.analyses, c.attributes, @run_id, v.run_id, v.shard_id, v.attempt
FROM {{ dataset }}.v_vector_log_latest AS v
LEFT JOIN {{ dataset }}.catalog AS c ON c.image_id = v.image_id AND c.listed_date = v.listed_date
WHERE {% include "_valid_vectors.sql" %}
  AND NOT EXISTS (
    SELECT 1 FROM {{ dataset }}.dedup_map AS d WHERE d.listed_date = @run_date AND d.image_id = v.image_id);
