-- Tag counts of the images delisted now, per listing day: their Elasticsearch documents are deleted
-- while tag_trends keeps counting them (past trends do not change), so the search check leaves them out.
SELECT t.listed_date, t.dimension, t.tag, COUNT(*) AS delisted_count
FROM {{ dataset }}.image_tags AS t
JOIN {{ dataset }}.v_delisted AS d ON d.image_id = t.image_id
GROUP BY t.listed_date, t.dimension, t.tag;
