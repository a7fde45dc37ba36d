-- Clean vectors of the window's partitions that are not delisted, with the catalog's label (the
-- exact ground truth and labelled queries of the index evaluation gate) and what filtered search
-- and search results read from the index's metadata: source, listed_date, attributes, the image's
-- tags as "dimension=tag" and the duplicates folded into it. Split by category by the caller.
WITH window_vectors AS (
  SELECT image_id, listed_date, category, catalog_category, source, attributes, embedding
  FROM {{ dataset }}.v_vectors_clean
  WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version
    AND category IN UNNEST(@categories) AND delisted_at IS NULL
),
tags AS (
  SELECT image_id, listed_date, ARRAY_AGG(CONCAT(dimension, '=', tag) ORDER BY dimension, tag) AS tags
  FROM {{ dataset }}.image_tags
  WHERE listed_date BETWEEN @date_from AND @date_to
  GROUP BY image_id, listed_date
),
duplicates AS (
  SELECT canonical_image_id AS image_id, ARRAY_AGG(image_id ORDER BY image_id) AS duplicates
  FROM {{ dataset }}.dedup_map
  WHERE canonical_image_id IN (SELECT image_id FROM window_vectors)
  GROUP BY canonical_image_id
)
SELECT w.image_id, w.listed_date, w.category, w.catalog_category, w.source, w.attributes, t.tags,
  d.duplicates, w.embedding
FROM window_vectors AS w
LEFT JOIN tags AS t ON t.image_id = w.image_id AND t.listed_date = w.listed_date
LEFT JOIN duplicates AS d ON d.image_id = w.image_id
ORDER BY w.category, w.image_id, w.listed_date;
