-- One day of the data engineer's catalog table or view (VECFLOW_CATALOG_TABLE, `dataset.table`): the
-- partition is a query parameter, the names are checked identifiers.
SELECT * FROM {{ table }} WHERE {{ date_column }} = @partition;
