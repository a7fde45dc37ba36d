-- Replaces one partition (optionally one stage of it) with the staged rows: reruns leave the same state.
DELETE FROM {{ dataset }}.{{ table }}
WHERE {{ partition_column }} = @partition_value{% if stage_column is defined %} AND {{ stage_column }} = @stage{% endif %};
INSERT INTO {{ dataset }}.{{ table }} ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
