-- A warehouse from before long-form tags (run once by vecflow.warehouse.bootstrap when vector_log
-- still has tag columns): each row's colour, pattern and model category become its `analyses`
-- ("legacy" tags, which the tagging step keeps where no measurement exists, and the model's class),
-- then the tag columns are dropped. Tag values are taxonomy keys, safe inside a JSON string.
UPDATE {{ dataset }}.vector_log
SET analyses = CONCAT(
  '{"legacy":{',
  IF(color IS NULL, '', CONCAT('"color":{"tag":"', color, '","confidence":', CAST(COALESCE(color_confidence, 0) AS STRING), '}')),
  IF(color IS NULL OR pattern IS NULL, '', ','),
  IF(pattern IS NULL, '', CONCAT('"pattern":{"tag":"', pattern, '","confidence":', CAST(COALESCE(pattern_confidence, 0) AS STRING), '}')),
  '}',
  IF(category_confidence IS NULL, '', CONCAT(',"model":{"category":"', category, '","confidence":', CAST(category_confidence AS STRING), '}')),
  '}')
WHERE analyses IS NULL;
UPDATE {{ dataset }}.vectors_clean AS c
SET analyses = v.analyses
FROM {{ dataset }}.vector_log AS v
WHERE c.analyses IS NULL
  AND v.listed_date = c.listed_date AND v.image_id = c.image_id AND v.model_version = c.model_version
  AND v.run_id = c.vector_run_id AND v.shard_id = c.shard_id AND v.attempt = c.attempt;
ALTER TABLE {{ dataset }}.vector_log DROP COLUMN IF EXISTS color;
ALTER TABLE {{ dataset }}.vector_log DROP COLUMN IF EXISTS color_confidence;
ALTER TABLE {{ dataset }}.vector_log DROP COLUMN IF EXISTS pattern;
ALTER TABLE {{ dataset }}.vector_log DROP COLUMN IF EXISTS pattern_confidence;
ALTER TABLE {{ dataset }}.vector_log DROP COLUMN IF EXISTS category_confidence;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS color;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS color_confidence;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS pattern;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS pattern_confidence;
ALTER TABLE {{ dataset }}.vectors_clean DROP COLUMN IF EXISTS category_confidence;
