{#- Included, not run: the condition on v_vector_log_latest AS v that selects the partition's valid
    vectors of @model_version (the latest attempt of each image, less what validation rejected into
    stage @reject_stage). One definition for dedup, the funnel and the clean table. -#}
v.listed_date = @run_date AND v.run_model_version = @model_version
  AND v.image_id NOT IN (
    SELECT image_id FROM {{ dataset }}.rejects WHERE listed_date = @run_date AND stage = @reject_stage)
