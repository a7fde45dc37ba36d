-- Clean vectors per category listed from @date_from to @date_to: what a window build will load
-- (sizes an index-build pod's memory).
SELECT category, COUNT(*) AS vectors
FROM {{ dataset }}.vectors_clean
WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version
GROUP BY category;
