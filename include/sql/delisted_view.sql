-- The images delisted now: each image's latest removal, unless the image was listed again on a later
-- day (a catalog partition after the removal's date brings it back). Search, the window indexes and
-- the tombstone set read it; vectors_clean keeps every row (past trends do not change).
CREATE OR REPLACE VIEW {{ dataset }}.v_delisted AS
WITH latest AS (
  SELECT image_id, delisted_at, reason, origin, partition_date,
    ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY delisted_at DESC, reason) AS position
  FROM {{ dataset }}.delistings
),
listed AS (
  SELECT image_id, MAX(listed_date) AS last_listed
  FROM {{ dataset }}.catalog
  WHERE image_id IN (SELECT image_id FROM {{ dataset }}.delistings)
  GROUP BY image_id
)
SELECT l.image_id, l.delisted_at, l.reason, l.origin, l.partition_date
FROM latest AS l
LEFT JOIN listed AS c ON c.image_id = l.image_id
WHERE l.position = 1 AND (c.last_listed IS NULL OR c.last_listed <= DATE(l.delisted_at));
