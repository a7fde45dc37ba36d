"""Assets that chain the DAGs (light import: DAG files use it at parse time)."""
from airflow.sdk import Asset

IMAGE_TAGS = Asset(name="vecflow_image_tags", uri="vecflow://warehouse/image_tags")
VECTORS_CLEAN = Asset(name="vecflow_vectors_clean", uri="vecflow://warehouse/vectors_clean")
DAY_INDEXES = Asset(name="vecflow_day_indexes", uri="vecflow://index/day")
