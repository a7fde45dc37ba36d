-- A retag's tags of some partitions, beside the serving image_tags until the switch.
INSERT INTO {{ dataset }}.image_tags_candidate ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
