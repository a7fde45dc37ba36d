-- A later attempt to deliver one alert event: when a channel finally took it (NULL if none did again),
-- each channel's outcome, and one more attempt.
UPDATE {{ dataset }}.alerts
SET sent_at = CAST(@sent_at AS TIMESTAMP), channels = @channels, attempts = COALESCE(attempts, 1) + 1
WHERE alert_id = @alert_id;
