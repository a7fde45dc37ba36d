-- A retag's switch, one transaction: image_tags becomes the candidate's rows (one taxonomy and head
-- version throughout, so no series mixes two), the tag rejects the retag's (staging rows).
DELETE FROM {{ dataset }}.image_tags WHERE TRUE;
INSERT INTO {{ dataset }}.image_tags ({{ columns | join(", ") }})
SELECT {{ columns | join(", ") }} FROM {{ dataset }}.image_tags_candidate;
DELETE FROM {{ dataset }}.image_tags_candidate WHERE TRUE;
DELETE FROM {{ dataset }}.rejects WHERE stage = 'tags';
INSERT INTO {{ dataset }}.rejects (image_id, listed_date, stage, reason, detail, category, run_id)
SELECT image_id, listed_date, 'tags', reason, detail, category, run_id FROM {{ staging }};
