-- Images of a partition rejected at @stage: none of them may go further.
SELECT DISTINCT image_id
FROM {{ dataset }}.rejects
WHERE listed_date = @run_date AND stage = @stage AND image_id IS NOT NULL;
