"""The ``clusterinval`` command line: invalidate, count, a local cluster, a demo."""
