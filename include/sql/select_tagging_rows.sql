-- The clean images of @model_version listed in [@date_from, @date_to], with what their tags are
-- computed from (catalog category and attributes, the job's analyses) and, when `extra_columns` is
-- [embedding], the vector a trained head reads (vecflow.tagging).
SELECT image_id, listed_date, source, category, catalog_category, analyses, attributes
  {%- for column in extra_columns %}, {{ column }}{% endfor %}
FROM {{ dataset }}.{{ 'v_vectors_clean' if extra_columns else 'vectors_clean' }}  -- the view has the vectors
WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version
ORDER BY listed_date, image_id;
