-- A retag starts from an empty candidate table (what an interrupted retag left is dropped).
DELETE FROM {{ dataset }}.image_tags_candidate WHERE TRUE;
