-- Tag trends per period ({{ periods | join(', ') }}) and facet over all partitions. A facet is a
-- condition on the image (source=shop_b, category=dress, or a pair of them; '' is the whole catalog)
-- within which a dimension's shares are counted; a facet's own keys (and the dimensions derived from
-- them) are not trended within it. Each tag's share is compared with the previous period and with the
-- same period a year before: a two-proportion z-test, corrected for every test of the period
-- (@correction: 'bh', Benjamini-Hochberg, @alpha is the false discovery rate; or 'bonferroni', @alpha
-- is the family-wise error rate), and a (1 - alpha) interval on the change. A tag is rising or falling
-- only when its change is at least @min_effect and the corrected p-value is under @alpha; a period (or
-- the one it is compared with) that covers less than @min_coverage of its days is `insufficient`, and
-- one not fully covered by the catalog is `partial`. Every taxonomy tag appears in every period and
-- facet (a vanished tag shows share 0). A share counts listings (an image on its listing date), not
-- tag rows: a listing with several tags of a multi-label dimension counts once in its total and once
-- under each tag (those shares need not sum to 1), and a facet on a multi-label dimension
-- (multi_label_keys) counts a listing under each of its tags. Replaced as a whole: trends span every
-- partition.
DELETE FROM {{ dataset }}.tag_trends WHERE TRUE;
INSERT INTO {{ dataset }}.tag_trends (
  period_kind, period_start, period, coverage, partial, facet_keys, facet, dimension, tag,
  tag_count, dimension_total, share, previous_share, share_change, change_low, change_high, z_score, p_value,
  p_adjusted, tests_in_period, direction, mover_rank,
  year_ago_share, year_ago_change, year_ago_p_adjusted, year_ago_direction)
WITH settings AS (
  SELECT @min_effect AS min_effect, @alpha AS alpha, @z_interval AS z_interval, @min_coverage AS min_coverage
),
span AS (
  SELECT MIN(listed_date) AS first_day, MAX(listed_date) AS last_day FROM {{ dataset }}.image_tags
),
-- each listing's (image and listing date) facet keys: its source and its tag in each single-label
-- dimension a facet uses; and whether it has a tag in each multi-label dimension
image_keys AS (
  SELECT image_id, listed_date, MAX(source) AS source
  {%- for key in key_dimensions %},
    MAX(IF(dimension = '{{ key }}', tag, NULL)) AS {{ key }}
  {%- endfor %}
  {%- for dimension in multi_label_dimensions %},
    MAX(IF(dimension = '{{ dimension }}', 1, 0)) AS has_{{ dimension }}
  {%- endfor %}
  FROM {{ dataset }}.image_tags
  GROUP BY image_id, listed_date
),
keyed AS (
  SELECT t.listed_date, t.dimension, t.tag, t.image_id, k.source
  {%- for key in key_dimensions %}, k.{{ key }}{% endfor %}
  FROM {{ dataset }}.image_tags AS t
  JOIN image_keys AS k USING (image_id, listed_date)
),
-- one pass over the tags: per month and finest key combination, the listings with each tag (a listing
-- has a tag once: COUNT(*)), and with any tag of each multi-label dimension (tag NULL; a single-label
-- dimension's listings are the sum of its tags'). Every coarser facet and every quarter sums these (a
-- listing has one value of each single-label key and one date; a quarter is three months). A listing
-- has several values of a multi-label key, so summing over one would count it twice: facets on a set
-- of multi-label keys read a pass of their own (monthly_<keys>), one row per listing and value of
-- those keys, where the keys are never summed over.
{%- for multi in [[]] + multi_key_sets %}
{%- set keys = key_dimensions + multi %}
monthly{% for key in multi %}_{{ key }}{% endfor %} AS (
  {%- for dimension in [none] + multi_label_dimensions %}
  {%- if dimension %}
  UNION ALL
  SELECT CAST(DATE_TRUNC(listed_date, MONTH) AS DATE) AS month, source{% for key in keys %}, {{ key }}{% endfor %},
         '{{ dimension }}' AS dimension, NULL AS tag, COUNT(*) AS images
  FROM image_keys
  {%- else %}
  SELECT CAST(DATE_TRUNC(listed_date, MONTH) AS DATE) AS month, source{% for key in keys %}, {{ key }}{% endfor %},
         dimension, tag, COUNT(*) AS images
  FROM keyed
  {%- endif %}
  {%- for key in multi %}
  JOIN (SELECT image_id, listed_date, tag AS {{ key }} FROM {{ dataset }}.image_tags WHERE dimension = '{{ key }}')
    AS multi_{{ key }} USING (image_id, listed_date)
  {%- endfor %}
  {%- if dimension %}
  WHERE has_{{ dimension }} = 1
  {%- endif %}
  GROUP BY month, source{% for key in keys %}, {{ key }}{% endfor %}{% if not dimension %}, dimension, tag{% endif %}
  {%- endfor %}
),
{%- endfor %}
facet_counts AS (
{%- for period in periods %}
{%- set period_loop = loop %}
{%- for facet in facets %}
  SELECT '{{ period }}' AS period_kind, CAST(DATE_TRUNC(month, {{ period | upper }}) AS DATE) AS period_start,
    '{{ facet | join(",") }}' AS facet_keys,
    {% if facet %}CONCAT({% for key in facet %}{% if not loop.first %}',', {% endif %}'{{ key }}=', {{ key }}{% if not loop.last %}, {% endif %}{% endfor %}){% else %}''{% endif %} AS facet,
    dimension, tag, SUM(images) AS images
  FROM monthly{% for key in facet if key in multi_label_keys %}_{{ key }}{% endfor %}
  WHERE TRUE
  {%- for key in facet %}
    AND {{ key }} IS NOT NULL AND dimension != '{{ key }}'
    AND dimension NOT IN (SELECT dimension FROM {{ dataset }}.tag_derivations WHERE from_dimension = '{{ key }}')
  {%- endfor %}
  GROUP BY period_kind, period_start, facet_keys, facet, dimension, tag
  {%- if not (loop.last and period_loop.last) %}
  UNION ALL
  {%- endif %}
{%- endfor %}
{%- endfor %}
),
totals AS (
  SELECT period_kind, period_start, facet_keys, facet, dimension, SUM(images) AS dimension_total
  FROM facet_counts
  WHERE {% if multi_label_dimensions %}(tag IS NULL) = (dimension IN ('{{ multi_label_dimensions | join("', '") }}')){% else %}TRUE{% endif %}
  GROUP BY period_kind, period_start, facet_keys, facet, dimension
),
shares AS (
  SELECT
    t.period_kind, t.period_start, t.facet_keys, t.facet, t.dimension, x.tag,
    COALESCE(c.images, 0) AS tag_count, t.dimension_total,
    COALESCE(c.images, 0) / t.dimension_total AS share
  FROM totals AS t
  JOIN {{ dataset }}.taxonomy AS x ON x.dimension = t.dimension
  LEFT JOIN facet_counts AS c
    ON c.period_kind = t.period_kind AND c.period_start = t.period_start AND c.facet_keys = t.facet_keys
    AND c.facet = t.facet AND c.dimension = t.dimension AND c.tag = x.tag
),
periods AS (
  SELECT
    period_kind, period_start,
    IF(period_kind = 'month', DATE_ADD(period_start, INTERVAL 1 MONTH), DATE_ADD(period_start, INTERVAL 3 MONTH))
      AS next_start,
    IF(period_kind = 'month', DATE_SUB(period_start, INTERVAL 1 MONTH), DATE_SUB(period_start, INTERVAL 3 MONTH))
      AS previous_start
  FROM (SELECT DISTINCT period_kind, period_start FROM totals)
),
coverage AS (
  SELECT
    p.period_kind, p.period_start, p.previous_start,
    IF(p.period_kind = 'month', FORMAT_DATE('%Y-%m', p.period_start),
       CONCAT(CAST(EXTRACT(YEAR FROM p.period_start) AS STRING), '-Q',
              CAST(EXTRACT(QUARTER FROM p.period_start) AS STRING))) AS period,
    (DATE_DIFF(LEAST(DATE_SUB(p.next_start, INTERVAL 1 DAY), s.last_day), GREATEST(p.period_start, s.first_day), DAY) + 1)
      / DATE_DIFF(p.next_start, p.period_start, DAY) AS coverage
  FROM periods AS p CROSS JOIN span AS s
),
-- each period against its previous period and the same period a year before
bases AS (
  SELECT period_kind, period_start, 'previous' AS compared_with, previous_start AS base_start FROM coverage
  UNION ALL
  SELECT period_kind, period_start, 'year_ago', DATE_SUB(period_start, INTERVAL 1 YEAR) FROM coverage
),
compared AS (
  SELECT
    s.*, b.compared_with, cv.period, cv.coverage,
    o.tag_count AS base_count, o.dimension_total AS base_total, o.share AS base_share,
    o.share IS NOT NULL AND cv.coverage >= st.min_coverage AND ocv.coverage >= st.min_coverage AS tested,
    (s.tag_count + o.tag_count) / (s.dimension_total + o.dimension_total) AS pooled
  FROM shares AS s
  CROSS JOIN settings AS st
  JOIN coverage AS cv ON cv.period_kind = s.period_kind AND cv.period_start = s.period_start
  JOIN bases AS b ON b.period_kind = s.period_kind AND b.period_start = s.period_start
  LEFT JOIN coverage AS ocv ON ocv.period_kind = s.period_kind AND ocv.period_start = b.base_start
  LEFT JOIN shares AS o
    ON o.period_kind = s.period_kind AND o.period_start = b.base_start AND o.facet_keys = s.facet_keys
    AND o.facet = s.facet AND o.dimension = s.dimension AND o.tag = s.tag
),
z_scores AS (
  SELECT *,
    share - base_share AS change,
    SQRT(share * (1 - share) / dimension_total + base_share * (1 - base_share) / base_total) AS change_se,
    IF(pooled > 0 AND pooled < 1,
       (share - base_share) / SQRT(pooled * (1 - pooled) * (1 / dimension_total + 1 / base_total)), 0) AS z
  FROM compared
),
-- two-sided p = erfc(|z| / sqrt 2), Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7)
p_values AS (
  SELECT *,
    IF(tested,
       t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
         * EXP(-x * x),
       NULL) AS p_value
  FROM (SELECT *, 1 / (1 + 0.3275911 * x) AS t FROM (SELECT *, ABS(z) / SQRT(2) AS x FROM z_scores))
),
-- a family of tests: one period kind, period and comparison (the windows below run over the distinct
-- p-values of a family, not its rows: narrow rows, many ties)
families AS (
  SELECT period_kind, period_start, compared_with, SUM(IF(tested, 1, 0)) AS tests
  FROM p_values GROUP BY period_kind, period_start, compared_with
),
distinct_p AS (
  SELECT period_kind, period_start, compared_with, p_value, COUNT(*) AS n
  FROM p_values WHERE tested GROUP BY period_kind, period_start, compared_with, p_value
),
-- Benjamini-Hochberg: a test's rank is how many of the family's tests have a p-value at most its own
-- (ties share the highest rank), p x tests / rank is its step-up value, and its adjusted p-value the
-- smallest step-up value of the tests with a p-value at least its own
step_up AS (
  SELECT d.*, f.tests,
    d.p_value * f.tests / SUM(d.n) OVER (PARTITION BY d.period_kind, d.period_start, d.compared_with ORDER BY d.p_value)
      AS step_up
  FROM distinct_p AS d JOIN families AS f USING (period_kind, period_start, compared_with)
),
adjusted_p AS (
  SELECT period_kind, period_start, compared_with, p_value,
    LEAST(1.0, CASE @correction
      WHEN 'bh' THEN MIN(step_up) OVER (PARTITION BY period_kind, period_start, compared_with ORDER BY p_value DESC)
      WHEN 'bonferroni' THEN p_value * tests
    END) AS p_adjusted
  FROM step_up
),
directions AS (
  SELECT p.*, f.tests, a.p_adjusted,
    CASE
      WHEN p.base_share IS NULL THEN 'new'
      WHEN NOT p.tested THEN 'insufficient'
      WHEN p.change >= st.min_effect AND a.p_adjusted < st.alpha THEN 'rising'
      WHEN p.change <= -st.min_effect AND a.p_adjusted < st.alpha THEN 'falling'
      ELSE 'flat'
    END AS direction,
    p.change - st.z_interval * p.change_se AS change_low,
    p.change + st.z_interval * p.change_se AS change_high
  FROM p_values AS p
  CROSS JOIN settings AS st
  JOIN families AS f USING (period_kind, period_start, compared_with)
  LEFT JOIN adjusted_p AS a USING (period_kind, period_start, compared_with, p_value)
),
-- movers ranked within their period and facet, biggest change first
ranks AS (
  SELECT period_kind, period_start, facet_keys, facet, dimension, tag,
    RANK() OVER (PARTITION BY period_kind, period_start, facet_keys, facet
                 ORDER BY ABS(change) DESC, p_adjusted, dimension, tag) AS mover_rank
  FROM directions WHERE compared_with = 'previous' AND direction IN ('rising', 'falling')
),
previous AS (
  SELECT d.*, r.mover_rank
  FROM directions AS d
  LEFT JOIN ranks AS r USING (period_kind, period_start, facet_keys, facet, dimension, tag)
  WHERE d.compared_with = 'previous'
)
SELECT
  p.period_kind, p.period_start, p.period, p.coverage, p.coverage < 1 AS partial, p.facet_keys, p.facet,
  p.dimension, p.tag, p.tag_count, p.dimension_total, p.share, p.base_share AS previous_share,
  p.change AS share_change, IF(p.tested, p.change_low, NULL), IF(p.tested, p.change_high, NULL),
  IF(p.tested, p.z, NULL), p.p_value, IF(p.tested, p.p_adjusted, NULL), p.tests, p.direction, p.mover_rank,
  y.base_share, y.change, IF(y.tested, y.p_adjusted, NULL), IF(y.base_share IS NULL, NULL, y.direction)
FROM previous AS p
JOIN directions AS y
  ON y.compared_with = 'year_ago' AND y.period_kind = p.period_kind AND y.period_start = p.period_start
  AND y.facet_keys = p.facet_keys AND y.facet = p.facet AND y.dimension = p.dimension AND y.tag = p.tag;
