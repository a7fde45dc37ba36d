-- Appends the staged alert events; a staged recovery (status 'resolved') also resolves the row that
-- opened its incident. The events go first: if the update fails, the incident stays open and the
-- next check sends the recovery again rather than never.
INSERT INTO {{ dataset }}.alerts ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
UPDATE {{ dataset }}.alerts SET status = 'resolved'
WHERE status = 'open' AND incident_id IN (SELECT incident_id FROM {{ staging }} WHERE status = 'resolved');
