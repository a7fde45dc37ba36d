-- What a search result shows besides its score: the image's tags and the duplicates folded into it.
WITH tags AS (
  SELECT image_id, ARRAY_AGG(CONCAT(dimension, '=', tag) ORDER BY dimension, tag) AS tags
  FROM {{ dataset }}.image_tags
  WHERE image_id IN UNNEST(@image_ids)
  GROUP BY image_id
),
duplicates AS (
  SELECT canonical_image_id AS image_id, ARRAY_AGG(image_id ORDER BY image_id) AS duplicates
  FROM {{ dataset }}.dedup_map
  WHERE canonical_image_id IN UNNEST(@image_ids)
  GROUP BY canonical_image_id
)
SELECT c.image_id, c.listed_date, c.source, c.attributes, t.tags, d.duplicates
FROM {{ dataset }}.vectors_clean AS c
LEFT JOIN tags AS t ON t.image_id = c.image_id
LEFT JOIN duplicates AS d ON d.image_id = c.image_id
WHERE c.image_id IN UNNEST(@image_ids) AND c.model_version = @model_version;
