"""Assets that chain the DAGs (light import: DAG files use it at parse time).

Plain names, no URI scheme: an Asset URI with a scheme makes Airflow load every provider's URI
handlers at parse time (0.4 s with the Google provider installed).
"""

from airflow.sdk import Asset

# Lineage of a partition: vector_log -> vectors_clean -> image_tags / indexes. Each task's asset
# event carries the partition, the run and what it produced (counts, index versions).
VECTOR_LOG = Asset(name="vecflow_vector_log")
VECTORS_CLEAN = Asset(name="vecflow_vectors_clean")
IMAGE_TAGS = Asset(name="vecflow_image_tags")
INDEXES = Asset(name="vecflow_indexes")
