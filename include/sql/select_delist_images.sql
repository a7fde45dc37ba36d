-- The delist feed's images as the catalog knows them: each one's latest listing up to the feed's
-- day and its catalog category (an image the catalog never listed is a reject).
SELECT image_id, category FROM {{ dataset }}.catalog
WHERE image_id IN UNNEST(@image_ids) AND listed_date <= @run_date
QUALIFY ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY listed_date DESC) = 1;
