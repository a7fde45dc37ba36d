-- The rules of funnel_balance.sql that a partition's funnel breaks; empty when it balances.
WITH balance AS (
{% include "funnel_balance.sql" %}
)
SELECT stage, category,
  IF(rule = 'in = out + dropped', 'in != out + dropped', 'out of one stage != in of the next') AS problem,
  in_rows, out_rows, dropped_rows
FROM balance
WHERE balance != 0
ORDER BY 1, 2;
