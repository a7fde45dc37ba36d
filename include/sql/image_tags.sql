-- One row per canonical image x dimension x tag. Tags outside the taxonomy become rejects.
DELETE FROM {{ dataset }}.image_tags WHERE listed_date = @run_date;
DELETE FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = 'tags';
-- a temporary table: the file runs as one script (one transaction) on BigQuery, one transaction on DuckDB
CREATE OR REPLACE TEMP TABLE _candidate_tags AS
WITH direct AS (
  SELECT image_id, listed_date, source, category AS image_category, 'category' AS dimension, category AS tag,
         category_confidence AS confidence, 'model' AS tag_source
  FROM {{ dataset }}.vectors_clean WHERE listed_date = @run_date AND model_version = @model_version
  UNION ALL
  SELECT image_id, listed_date, source, category, 'color', color, color_confidence, 'pixels'
  FROM {{ dataset }}.vectors_clean WHERE listed_date = @run_date AND model_version = @model_version
  UNION ALL
  SELECT image_id, listed_date, source, category, 'pattern', pattern, pattern_confidence, 'pixels'
  FROM {{ dataset }}.vectors_clean WHERE listed_date = @run_date AND model_version = @model_version
)
SELECT * FROM direct
UNION ALL
SELECT d.image_id, d.listed_date, d.source, d.image_category, t.dimension, t.tag, d.confidence, 'derived'
FROM direct AS d
JOIN {{ dataset }}.tag_derivations AS t ON t.from_dimension = d.dimension AND t.from_tag = d.tag;
INSERT INTO {{ dataset }}.rejects (image_id, listed_date, stage, reason, detail, category, run_id)
SELECT c.image_id, c.listed_date, 'tags', 'unknown_tag',
       CONCAT(c.dimension, '=', COALESCE(c.tag, 'NULL')), c.image_category, @run_id
FROM _candidate_tags AS c
LEFT JOIN {{ dataset }}.taxonomy AS t ON t.dimension = c.dimension AND t.tag = c.tag
WHERE t.tag IS NULL;
INSERT INTO {{ dataset }}.image_tags (image_id, listed_date, dimension, tag, confidence, tag_source, run_id, source)
SELECT c.image_id, c.listed_date, c.dimension, c.tag, c.confidence, c.tag_source, @run_id, c.source
FROM _candidate_tags AS c
JOIN {{ dataset }}.taxonomy AS t ON t.dimension = c.dimension AND t.tag = c.tag;
