-- The one writer of image_tags for a partition: its rows replaced by the tagging step's (vecflow.tagging).
DELETE FROM {{ dataset }}.image_tags WHERE listed_date = @run_date;
INSERT INTO {{ dataset }}.image_tags ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
