-- Per model, how often its own category head (the job's analyses.model) names the image's category
-- tag, over its clean images: a model-quality signal the reindex switch compares. (With categories
-- from the catalog, an index's same-category precision is 1 whatever the model: every vector of a
-- category's index has that category.)
SELECT model_version, COUNT(*) AS images,
  COUNTIF(JSON_VALUE(analyses, '$.model.category') IS NOT NULL) AS with_head,
  COUNTIF(JSON_VALUE(analyses, '$.model.category') = category) AS agreeing
FROM {{ dataset }}.vectors_clean
WHERE model_version IN UNNEST(@model_versions)
GROUP BY model_version;
