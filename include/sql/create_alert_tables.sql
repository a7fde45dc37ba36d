-- Alerts: one row per alert event (an incident opened or recovered, a task failure, a missed deadline).
-- Inflow incidents are keyed by alert_key ('inflow:<source>'): the row that opens one has status
-- 'open' until a 'recovered' row with the same incident_id resolves it. One-shot events (a failed
-- task, a missed deadline) have no status. While an incident is open, 'reminder' rows repeat it and an
-- 'acknowledged' row (`alerts ack KEY`) stops the reminders. channels records each channel's outcome
-- ('webhook:sent,slack:failed'); sent_at is NULL until a channel took the message, and attempts counts
-- the checks that tried to deliver it (an undelivered event is sent again by each later check).
CREATE TABLE IF NOT EXISTS {{ dataset }}.alerts (
  alert_id STRING,
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
  attempts INT64,
  run_id STRING
);
