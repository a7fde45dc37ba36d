"""Catalog generator: Fashion-MNIST turned into a daily catalog of product images with planted truth."""
