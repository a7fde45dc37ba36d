-- A category's clean vectors over the window's partitions, with the catalog's label: the exact
-- ground truth and the labelled queries of the index evaluation gate.
SELECT image_id, catalog_category, embedding
FROM {{ dataset }}.vectors_clean
WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version AND category = @category
ORDER BY image_id;
