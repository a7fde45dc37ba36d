"""Assets that chain the DAGs (light import: DAG files use it at parse time).

Plain names, no URI scheme: an Asset URI with a scheme makes Airflow load every provider's URI
handlers at parse time (0.4 s with the Google provider installed).
"""
from airflow.sdk import Asset

IMAGE_TAGS = Asset(name="vecflow_image_tags")
VECTORS_CLEAN = Asset(name="vecflow_vectors_clean")
DAY_INDEXES = Asset(name="vecflow_day_indexes")
