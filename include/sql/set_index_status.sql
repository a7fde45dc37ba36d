-- Staged (category, path, status) rows (status published, blocked, or deleted for pruned versions): publishing a window version retires the one published
-- before it in its category; rollback does the same towards an older version. published_at is the
-- first publication, so rollback can walk back through the history.
UPDATE {{ dataset }}.index_registry AS r SET status = 'retired'
WHERE r.kind = 'window' AND r.model_version = @model_version AND r.status = 'published'
  AND EXISTS (SELECT 1 FROM {{ staging }} AS s WHERE s.status = 'published' AND s.category = r.category)
  AND NOT EXISTS (SELECT 1 FROM {{ staging }} AS s WHERE s.status = 'published' AND s.path = r.path);
UPDATE {{ dataset }}.index_registry AS r
SET status = s.status,
  published_at = IF(s.status = 'published' AND r.published_at IS NULL, CURRENT_TIMESTAMP(), r.published_at)
FROM {{ staging }} AS s
WHERE r.kind = 'window' AND r.model_version = @model_version AND r.path = s.path;
