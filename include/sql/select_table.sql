SELECT * FROM {{ dataset }}.{{ table }};
