-- The day's indexes of a build group's @categories replace any earlier registration of the same day,
-- model and categories (the other groups register theirs in their own task).
DELETE FROM {{ dataset }}.index_registry
WHERE kind = 'day' AND date_from = @run_date AND model_version = @model_version
  AND category IN UNNEST(@categories);
INSERT INTO {{ dataset }}.index_registry ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
