"""Search sink: image tags and tag trends in Elasticsearch, for dashboards and tag queries."""
