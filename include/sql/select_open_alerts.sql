-- Open incidents whose alert_key starts with @key_prefix: the row that opened each one.
SELECT alert_key, incident_id
FROM {{ dataset }}.alerts
WHERE status = 'open' AND STARTS_WITH(alert_key, @key_prefix)
ORDER BY alert_key;
