-- Funnel of one partition: for every stage and category, what came in, went out and was dropped
-- (by reason). "in" and "out" are counted from different tables, so a stage that loses rows
-- without a reject shows up as in != out + dropped. The catalog stage is written by the plan task.
-- Up to embed, category is the catalog's; from validate on it is the category tag. The tags stage is
-- written by vecflow.tagging, the search stage by the search sink (what Elasticsearch took is known
-- only there), the delisted stage by vecflow.lifecycle (the delist feed: in = its rows, out =
-- removals recorded).
DELETE FROM {{ dataset }}.funnel_metrics
WHERE partition_date = @run_date AND stage NOT IN ('catalog', 'tags', 'search', 'delisted');
INSERT INTO {{ dataset }}.funnel_metrics (stage, partition_date, category, metric, value, run_id, recorded_at)
WITH latest AS (
  SELECT image_id, COALESCE(category, 'unknown') AS category,
         COALESCE(catalog_category, 'unknown') AS catalog_category, COALESCE(reused, FALSE) AS reused
  FROM {{ dataset }}.v_vector_log_latest WHERE listed_date = @run_date AND run_model_version = @model_version
),
valid AS (
  SELECT COALESCE(v.category, 'unknown') AS category
  FROM {{ dataset }}.v_vector_log_latest AS v WHERE {% include "_valid_vectors.sql" %}
),
clean AS (
  SELECT image_id, category FROM {{ dataset }}.vectors_clean
  WHERE listed_date = @run_date AND model_version = @model_version
),
counts AS (
  SELECT 'embed' AS stage, COALESCE(category, 'unknown') AS category, 'in' AS metric, COUNT(*) AS value
  FROM {{ dataset }}.catalog WHERE listed_date = @run_date GROUP BY 2
  UNION ALL
  SELECT 'embed', catalog_category, 'out', COUNT(*) FROM latest GROUP BY 2
  UNION ALL
  -- of the embed stage's out, the vectors copied from the same content embedded before (not in the balance)
  SELECT 'embed', catalog_category, 'reused', COUNT(*) FROM latest WHERE reused GROUP BY 2
  UNION ALL
  SELECT stage, COALESCE(category, 'unknown'), CONCAT('dropped.', reason), COUNT(*)
  FROM {{ dataset }}.rejects
  WHERE listed_date = @run_date AND stage IN ('embed', 'validate')
  GROUP BY stage, 2, reason
  UNION ALL
  SELECT 'validate', category, 'in', COUNT(*) FROM latest GROUP BY 2
  UNION ALL
  SELECT 'validate', category, 'out', COUNT(*) FROM valid GROUP BY 2
  UNION ALL
  SELECT 'dedup', category, 'in', COUNT(*) FROM valid GROUP BY 2
  UNION ALL
  SELECT 'dedup', COALESCE(category, 'unknown'), CONCAT('dropped.', reason), COUNT(*)
  FROM {{ dataset }}.dedup_map WHERE listed_date = @run_date GROUP BY 2, reason
  UNION ALL
  SELECT 'dedup', category, 'out', COUNT(*) FROM clean GROUP BY 2
  UNION ALL
  SELECT 'index', category, 'in', COUNT(*) FROM clean GROUP BY 2
  UNION ALL
  SELECT 'index', category, 'out', SUM(vector_count)
  FROM {{ dataset }}.index_registry
  WHERE kind = 'day' AND date_from = @run_date AND model_version = @model_version GROUP BY 2
)
SELECT stage, @run_date, category, metric, value, @run_id, CURRENT_TIMESTAMP()
FROM counts;
