-- One day of the data engineer's delist feed table (VECFLOW_CATALOG_DELIST_TABLE, `dataset.table`:
-- image_id, delisted_at TIMESTAMP, reason): the removals whose delisted_at falls in the day, UTC
-- ([@day_start, @day_end), query parameters); the names are checked identifiers.
SELECT * FROM {{ table }} WHERE {{ date_column }} >= @day_start AND {{ date_column }} < @day_end;
