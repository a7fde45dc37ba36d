-- The taxonomy and head versions image_tags holds, with how many partitions and rows each tagged.
SELECT taxonomy_version, head_version, COUNT(DISTINCT listed_date) AS partitions, COUNT(*) AS tag_rows
FROM {{ dataset }}.image_tags
GROUP BY taxonomy_version, head_version
ORDER BY taxonomy_version, head_version;
