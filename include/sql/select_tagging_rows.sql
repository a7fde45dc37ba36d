-- The clean images of @model_version listed in [@date_from, @date_to], with what their tags are
-- computed from (vecflow.tagging): the catalog category; each catalog attribute key the taxonomy
-- reads (`attribute_keys`) as its JSON value, `attribute_<i>` for the i-th key (one JSON read per key
-- in the warehouse, not a Python parse of every image's attributes); the job's analyses as one JSON
-- line each (NaN, the job's hue of a colourless garment, as null; {} where none), so that a chunk
-- parses in one pass; `extra_columns`: `attributes` whole (keys no JSONPath names plainly) and
-- `embedding`, the vector a head or a text tower reads. Unordered: sorting the rows with their
-- vectors took longer than tagging them.
SELECT image_id, listed_date, source, category, catalog_category,
  CONCAT(REPLACE(COALESCE(NULLIF(analyses, ''), '{}'), 'NaN', 'null'), '\n') AS analyses_lines
  {%- for key in attribute_keys %}, JSON_QUERY(attributes, '$.{{ key }}') AS attribute_{{ loop.index0 }}{% endfor %}
  {%- for column in extra_columns %}, {{ column }}{% endfor %}
FROM {{ dataset }}.{{ 'v_vectors_clean' if 'embedding' in extra_columns else 'vectors_clean' }}  -- the view has the vectors
WHERE listed_date BETWEEN @date_from AND @date_to AND model_version = @model_version;
