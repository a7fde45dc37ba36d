"""The embedding job: image bytes -> content md5, dHash, 256-d L2-normalised vector, colour and pattern tags.

This package is the container contract: it depends on torch, numpy, pillow and pyarrow only, and
runs the same way as a Kubernetes pod on a GPU or as a local process on the CPU.
"""
