-- Clean vectors per category listed up to @run_date: whether a category has enough to train its IVF.
SELECT category, COUNT(*) AS vectors
FROM {{ dataset }}.vectors_clean
WHERE listed_date <= @run_date AND model_version = @model_version
GROUP BY category;
