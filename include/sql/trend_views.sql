-- Analysts' views of tag_trends (part of the migrated schema: created once per schema version, not
-- by each trends run). Views carry no ORDER BY: a query orders what it reads (README, "Querying").
CREATE OR REPLACE VIEW {{ dataset }}.v_tag_trends_latest AS
SELECT quarter, dimension, tag, tag_count, previous_share, share, share_change, direction, mover_rank
FROM {{ dataset }}.tag_trends
WHERE quarter_start = (SELECT MAX(quarter_start) FROM {{ dataset }}.tag_trends);

CREATE OR REPLACE VIEW {{ dataset }}.v_tag_share_by_quarter AS
SELECT dimension, tag, quarter, share, tag_count
FROM {{ dataset }}.tag_trends;
