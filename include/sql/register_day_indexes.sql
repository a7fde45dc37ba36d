-- The day's indexes replace any earlier registration of the same day and model.
DELETE FROM {{ dataset }}.index_registry
WHERE kind = 'day' AND date_from = @run_date AND model_version = @model_version;
INSERT INTO {{ dataset }}.index_registry ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
