-- A partition's clean vectors of @categories (one build group's), for their day indexes.
SELECT image_id, category, model_version, embedding
FROM {{ dataset }}.v_vectors_clean
WHERE listed_date = @run_date AND model_version = @model_version AND category IN UNNEST(@categories)
ORDER BY category, image_id;
