"""vecflow: product images to vectors, tags, trends and faiss indexes, orchestrated by Airflow 3."""
