-- The day's usable vectors of @model_version as the vector_log quality suite checks them: the
-- embedding job's scalars, not the vectors (a NaN makes the norm NaN, null to GX; an infinity inf).
SELECT
  image_id, content_md5, dim,
  dim AS embedding_length,
  embedding_norm
FROM {{ dataset }}.v_vector_log_latest
WHERE listed_date = @run_date AND run_model_version = @model_version;
