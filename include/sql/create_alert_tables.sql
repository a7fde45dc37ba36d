-- Alerts: one row per alert event (an incident opened or recovered, a task failure, a missed deadline).
-- Inflow incidents are keyed by alert_key ('inflow:<source>'): the row that opens one has status
-- 'open' until a 'recovered' row with the same incident_id resolves it. One-shot events (a failed
-- task, a missed deadline) have no status. channels records each channel's outcome
-- ('webhook:sent,slack:failed'); sent_at is NULL when no channel took the message.
CREATE TABLE IF NOT EXISTS {{ dataset }}.alerts (
  alert_key STRING NOT NULL,
  kind STRING NOT NULL,
  severity STRING NOT NULL,
  source STRING,
  message STRING NOT NULL,
  details STRING,
  window_start TIMESTAMP,
  window_end TIMESTAMP,
  observed INT64,
  expected FLOAT64,
  incident_id STRING,
  status STRING,
  raised_at TIMESTAMP NOT NULL,
  sent_at TIMESTAMP,
  channels STRING,
  run_id STRING
);
