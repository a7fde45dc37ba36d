-- Every image delisted now (v_delisted): the tombstone set and what the window indexes drop.
SELECT image_id, delisted_at, reason, origin, partition_date FROM {{ dataset }}.v_delisted ORDER BY image_id;
