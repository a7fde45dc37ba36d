-- Window index versions enter the registry as candidates (replacing an earlier registration of the
-- same version, e.g. an unchanged rerun of the date).
DELETE FROM {{ dataset }}.index_registry
WHERE kind = 'window' AND model_version = @model_version AND path IN (SELECT path FROM {{ staging }});
INSERT INTO {{ dataset }}.index_registry ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
