-- The partition's clean vectors of @model_version as the vectors_clean quality suite checks them.
SELECT image_id, category
FROM {{ dataset }}.vectors_clean
WHERE listed_date = @run_date AND model_version = @model_version;
