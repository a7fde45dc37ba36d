SELECT image_id, category, model_version, embedding
FROM {{ dataset }}.vectors_clean
WHERE listed_date = @run_date AND model_version = @model_version
ORDER BY category, image_id;
