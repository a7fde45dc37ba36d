-- A window index version enters the registry as a candidate (replacing an earlier registration of
-- the same version, e.g. a rerun of the date).
DELETE FROM {{ dataset }}.index_registry
WHERE kind = 'window' AND model_version = @model_version AND category = @category AND path = @path;
INSERT INTO {{ dataset }}.index_registry ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
