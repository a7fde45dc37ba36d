-- Vectors to train a category's IVF on: up to @sample_size of those listed up to @run_date, the same
-- ones on every run (ordered by image_id).
SELECT image_id, embedding
FROM {{ dataset }}.v_vectors_clean
WHERE listed_date <= @run_date AND model_version = @model_version AND category = @category
ORDER BY image_id
LIMIT @sample_size;
