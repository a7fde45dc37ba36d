-- Alert events that no channel has taken yet (every channel failed, or none was configured), oldest
-- first: each later check sends them again until one does. Acknowledgements are records, not messages.
SELECT *
FROM {{ dataset }}.alerts
WHERE sent_at IS NULL AND alert_id IS NOT NULL AND COALESCE(status, '') != 'acknowledged'
ORDER BY raised_at, alert_id;
