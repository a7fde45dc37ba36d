-- Replaces a small reference table (taxonomy, tag derivations) with the staged rows.
DELETE FROM {{ dataset }}.{{ table }} WHERE TRUE;
INSERT INTO {{ dataset }}.{{ table }} ({{ columns | join(', ') }})
SELECT {{ columns | join(', ') }} FROM {{ staging }};
