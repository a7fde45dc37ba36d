-- The movers of the latest period of each period kind, in every facet: biggest changes first.
SELECT period_kind, period, partial, facet, dimension, tag, previous_share, share, share_change, change_low,
       change_high, p_adjusted, direction, mover_rank
FROM {{ dataset }}.v_tag_trends_latest
WHERE direction IN ('rising', 'falling')
ORDER BY period_kind, facet_keys, facet, mover_rank;
