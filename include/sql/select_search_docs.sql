-- The partition's canonical images with their tags (one row per image x dimension x tag; images
-- without a tag row too), for the search sink to turn into one document per image; a delisted image's
-- rows say so (its document is deleted, not written).
SELECT c.image_id, c.listed_date, c.source, c.category AS predicted_category, c.model_version, c.attributes,
  {% for column in extra_columns %}c.{{ column }}, {% endfor %}
  t.dimension, t.tag, t.confidence, t.tag_source, d.image_id IS NOT NULL AS delisted
FROM {{ dataset }}.{{ 'v_vectors_clean' if extra_columns else 'vectors_clean' }} AS c  -- the view has the vectors
LEFT JOIN {{ dataset }}.image_tags AS t ON t.image_id = c.image_id AND t.listed_date = c.listed_date
LEFT JOIN {{ dataset }}.v_delisted AS d ON d.image_id = c.image_id
WHERE c.listed_date = @run_date AND c.model_version = @model_version
ORDER BY c.image_id, t.dimension, t.tag;
