"""The demo, apart from the pipeline: the catalog generator (Fashion-MNIST turned into product images
with planted duplicates, corrupt files and trends), the planted-truth oracle, the loopback
Elasticsearch-compatible server and the runner that drives the DAGs through `dag.test()` for
`make run`. The pipeline never imports this package (tests/test_architecture.py proves it)."""
