-- Vectors @model_version already computed for content a shard is about to embed (@content_md5s): the
-- newest row per content_md5, whatever image or partition it was listed as. The fetch stage copies
-- them instead of sending the same bytes to the GPU again, so a rerun or backfill of unchanged images
-- embeds nothing.
SELECT * EXCEPT (newest)
FROM (
  SELECT v.*, ROW_NUMBER() OVER (PARTITION BY v.content_md5 ORDER BY v.embedded_at DESC, v.image_id) AS newest
  FROM {{ dataset }}.vector_log AS v
  WHERE v.model_version = @model_version AND v.content_md5 IN UNNEST(@content_md5s) AND v.embedding IS NOT NULL
)
WHERE newest = 1;
