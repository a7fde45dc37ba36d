-- One partition's rejects by stage and reason, with an example, for the run report.
SELECT stage, reason, COUNT(*) AS images, MIN(image_id) AS example_image_id, MIN(detail) AS example_detail
FROM {{ dataset }}.rejects
WHERE listed_date = @run_date
GROUP BY stage, reason
ORDER BY stage, images DESC, reason;
