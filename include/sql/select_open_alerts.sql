-- Open incidents whose alert_key starts with @key_prefix: the row that opened each one, when it was
-- opened, when it was last raised (opened or reminded), how many reminders went out, and whether
-- someone acknowledged it (`alerts ack KEY`), which stops its reminders.
WITH opened AS (
  SELECT alert_key, incident_id, raised_at AS opened_at
  FROM {{ dataset }}.alerts
  WHERE status = 'open' AND STARTS_WITH(alert_key, @key_prefix)
),
events AS (
  SELECT incident_id,
    MAX(IF(status IN ('open', 'reminder'), raised_at, NULL)) AS last_raised_at,
    SUM(IF(status = 'reminder', 1, 0)) AS reminders,
    MAX(IF(status = 'acknowledged', 1, 0)) = 1 AS acknowledged
  FROM {{ dataset }}.alerts
  WHERE incident_id IN (SELECT incident_id FROM opened)
  GROUP BY incident_id
)
SELECT o.alert_key, o.incident_id, o.opened_at, e.last_raised_at, e.reminders, e.acknowledged
FROM opened AS o
JOIN events AS e ON e.incident_id = o.incident_id
ORDER BY o.alert_key;
