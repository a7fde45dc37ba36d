-- Publishing a window version retires the one published before it; rollback does the reverse.
-- published_at is the first publication, so rollback can walk back through the history.
UPDATE {{ dataset }}.index_registry SET status = 'retired'
WHERE @status = 'published' AND kind = 'window' AND model_version = @model_version AND category = @category
  AND status = 'published' AND path != @path;
UPDATE {{ dataset }}.index_registry
SET status = @status,
  published_at = IF(@status = 'published' AND published_at IS NULL, CURRENT_TIMESTAMP(), published_at)
WHERE kind = 'window' AND model_version = @model_version AND category = @category AND path = @path;
