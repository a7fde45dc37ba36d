-- Clean vectors of the window's partitions, with the catalog's label: the exact ground truth and the
-- labelled queries of the index evaluation gate (split by category by the caller).
SELECT image_id, listed_date, category, catalog_category, embedding
FROM {{ dataset }}.v_vectors_clean
WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version
  AND category IN UNNEST(@categories)
ORDER BY category, image_id;
