-- The day's usable vectors of @model_version as the vector_log quality suite checks them. The length
-- and L2 norm of each embedding are computed here rather than fetching 256 floats per row. A NaN
-- makes the norm NaN and a NULL element makes it NULL (both null to GX); an infinity makes it inf.
-- One subquery per row: a second one (EXISTS) would triple the time on DuckDB.
SELECT
  image_id, content_md5, dim,
  ARRAY_LENGTH(embedding) AS embedding_length,
  (SELECT IF(COUNT(*) = COUNT(x), SQRT(SUM(x * x)), NULL) FROM UNNEST(embedding) AS x) AS embedding_norm
FROM {{ dataset }}.v_vector_log_latest
WHERE listed_date = @run_date AND run_model_version = @model_version;
