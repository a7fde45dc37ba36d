-- Analysts' views of tag_trends (part of the migrated schema: created once per schema version, not
-- by each trends run). Views carry no ORDER BY: a query orders what it reads (README, "Querying").

DROP VIEW IF EXISTS {{ dataset }}.v_tag_share_by_quarter;  -- replaced by v_tag_share (periods and facets)
-- Every facet's rows in the latest period of each period kind (month, quarter) that covers enough
-- days to be tested: a quarter barely begun (all `insufficient`) leaves the one before it the latest.
CREATE OR REPLACE VIEW {{ dataset }}.v_tag_trends_latest AS
SELECT t.period_kind, t.period, t.partial, t.facet_keys, t.facet, t.dimension, t.tag, t.tag_count,
       t.dimension_total, t.previous_share, t.share, t.share_change, t.change_low, t.change_high, t.p_adjusted,
       t.direction, t.mover_rank, t.year_ago_share, t.year_ago_direction
FROM {{ dataset }}.tag_trends AS t
JOIN (
  SELECT period_kind, MAX(period_start) AS period_start
  FROM {{ dataset }}.tag_trends WHERE direction != 'insufficient' GROUP BY period_kind
) AS l USING (period_kind, period_start);

-- The movers of every period and facet: significant changes of at least the minimum effect.
CREATE OR REPLACE VIEW {{ dataset }}.v_trend_movers AS
SELECT period_kind, period, period_start, partial, facet_keys, facet, dimension, tag, previous_share, share,
       share_change, change_low, change_high, p_adjusted, direction, mover_rank
FROM {{ dataset }}.tag_trends
WHERE direction IN ('rising', 'falling');

-- A tag's share within a facet and period (a pie or a stacked bar per facet).
CREATE OR REPLACE VIEW {{ dataset }}.v_tag_share AS
SELECT period_kind, period, period_start, partial, facet_keys, facet, dimension, tag, tag_count, share
FROM {{ dataset }}.tag_trends;
