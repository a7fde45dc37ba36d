-- The clean vectors with their embedding and edge signature, joined back from the vector_log row
-- each was kept from (vectors are stored once), and `delisted_at` / `delist_reason` while the image
-- is delisted (v_delisted). Read by the index stage, near dedup and search; validation, dedup, the
-- funnel and the quality suites read vectors_clean's scalars and ids only.
CREATE OR REPLACE VIEW {{ dataset }}.v_vectors_clean AS
SELECT c.*, v.embedding, v.edge_signature, d.delisted_at, d.reason AS delist_reason
FROM {{ dataset }}.vectors_clean AS c
JOIN {{ dataset }}.vector_log AS v
  ON v.listed_date = c.listed_date AND v.image_id = c.image_id AND v.model_version = c.model_version
  AND v.run_id = c.vector_run_id AND v.shard_id = c.shard_id AND v.attempt = c.attempt
LEFT JOIN {{ dataset }}.v_delisted AS d ON d.image_id = c.image_id;
