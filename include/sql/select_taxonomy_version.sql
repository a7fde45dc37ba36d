-- The taxonomy version(s) the warehouse's taxonomy table was written from.
SELECT DISTINCT taxonomy_version FROM {{ dataset }}.taxonomy;
