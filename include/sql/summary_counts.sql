SELECT
  (SELECT COUNT(*) FROM {{ dataset }}.catalog) AS catalog_images,
  (SELECT COUNT(DISTINCT listed_date) FROM {{ dataset }}.catalog) AS partitions,
  (SELECT COUNT(*) FROM {{ dataset }}.vector_log) AS vector_log_rows,
  (SELECT COUNT(*) FROM {{ dataset }}.v_vector_log_latest) AS vectors_staged,
  (SELECT COUNT(*) FROM {{ dataset }}.vectors_clean WHERE model_version = @model_version) AS vectors_clean,
  (SELECT COUNT(*) FROM {{ dataset }}.image_tags) AS tags_written,
  (SELECT COUNT(DISTINCT image_id) FROM {{ dataset }}.image_tags) AS images_tagged;
