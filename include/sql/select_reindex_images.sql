-- What a reindex re-embeds: the canonical images of the serving model in the date range, with their
-- catalog rows (the embedding entrypoint reads the catalog's uri and labels).
SELECT k.image_id, k.uri, k.source, k.listed_date, k.category
FROM {{ dataset }}.vectors_clean AS c
JOIN {{ dataset }}.catalog AS k ON k.image_id = c.image_id AND k.listed_date = c.listed_date
WHERE c.model_version = @serving_model_version
  AND c.listed_date BETWEEN @date_from AND @date_to
ORDER BY k.listed_date, k.image_id;
