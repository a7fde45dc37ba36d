-- The tag rows of the images delisted now (with the image's source and listing day): their
-- Elasticsearch documents are deleted while tag_trends keeps counting them (past trends do not
-- change), so the search check takes them out of every period and facet they count in.
SELECT t.image_id, t.listed_date, t.source, t.dimension, t.tag
FROM {{ dataset }}.image_tags AS t
JOIN {{ dataset }}.v_delisted AS d ON d.image_id = t.image_id
ORDER BY t.image_id, t.listed_date, t.dimension, t.tag;
