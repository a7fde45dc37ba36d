{#- Included, not run: the condition on v_vector_log_latest AS v that selects the partition's valid
    vectors of @model_version (the latest attempt of each image, less what validation rejected into
    stage @reject_stage). One definition for dedup, the funnel and the clean table. NOT EXISTS, not
    NOT IN: a NULL in the subquery would make NOT IN select nothing. -#}
v.listed_date = @run_date AND v.run_model_version = @model_version
  AND NOT EXISTS (
    SELECT 1 FROM {{ dataset }}.rejects AS rejected
    WHERE rejected.listed_date = @run_date AND rejected.stage = @reject_stage AND rejected.image_id = v.image_id)
