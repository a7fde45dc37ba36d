-- Appends one shard attempt to the log, once: loading the same attempt twice adds nothing.
INSERT INTO {{ dataset }}.vector_log ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }}
WHERE NOT EXISTS (
  SELECT 1 FROM {{ dataset }}.vector_log AS v
  WHERE v.listed_date = @run_date AND v.run_id = @run_id AND v.shard_id = @shard_id AND v.attempt = @attempt
);
