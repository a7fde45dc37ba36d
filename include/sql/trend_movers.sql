-- Tags whose share rose or fell beyond the threshold in the latest quarter, biggest movers first.
SELECT quarter, dimension, tag, previous_share, share, share_change, direction
FROM {{ dataset }}.tag_trends
WHERE quarter_start = (SELECT MAX(quarter_start) FROM {{ dataset }}.tag_trends)
  AND ABS(share_change) > @flat_threshold
ORDER BY ABS(share_change) DESC, dimension, tag;
