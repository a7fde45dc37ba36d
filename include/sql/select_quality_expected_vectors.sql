-- What the embed stage owes a partition: every catalog row comes out as a vector or an embed reject.
SELECT
  (SELECT COUNT(*) FROM {{ dataset }}.catalog WHERE listed_date = @run_date) AS catalog_rows,
  (SELECT COUNT(*) FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = 'embed') AS embed_rejects;
