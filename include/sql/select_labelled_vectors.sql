-- The stored vectors of the labelled images @image_ids under @model_version, for `tags train` (heads
-- are trained on what is already embedded). An image listed on several days has a clean vector per
-- day: the newest one stands for it. The ids are joined as a table (a hash join), not tested with IN
-- per row against a list of many thousands.
WITH labelled AS (
  SELECT DISTINCT image_id FROM UNNEST(@image_ids) AS image_id
)
SELECT c.image_id, c.embedding
FROM {{ dataset }}.v_vectors_clean AS c
JOIN labelled AS l ON l.image_id = c.image_id
WHERE c.model_version = @model_version
QUALIFY ROW_NUMBER() OVER (PARTITION BY c.image_id ORDER BY c.listed_date DESC) = 1
ORDER BY c.image_id;
